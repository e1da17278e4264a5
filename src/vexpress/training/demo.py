"""``make demo``: the embedded default end to end on a CPU (orchestration behind ``vexpress-demo``).

Phases (each timed, with progress bars), everything cached so a re-run only redoes what changed:

1. ``data``: the synthetic talking-face benchmark (``vexpress.synthetic``, cached by config hash);
2. ``vae``: a tiny real ``AutoencoderKL`` fitted on the training frames (cached, :mod:`vexpress.training.vae`);
3. ``latents``: a latent cache of every clip (``vexpress.data.cache``), so training reads tensors;
4. ``train``: the demo experiments (``conf/experiment/demo_*.yaml``) through the same curriculum loop as
   ``vexpress-train``; a stage whose effective config equals an already trained one (the image stage of the recipe
   and of the progressive ablation) is trained once and reused;
5. ``probe``: condition influence of every stage export on a fixed held-out batch;
6. ``evaluate``: every run (and the recipe's earlier stages) generates the held-out clips with their own audio and
   with another clip's audio, measured against the synthetic ground truth (``vexpress.evaluation``);
7. ``sample_video``: ground truth | recipe, side by side, with the audio;
8. ``report``: ``report.md``, ``report.json``, ``report.png``.

Nothing here tunes the evaluation: the protocol is fixed in ``conf/demo.yaml`` and identical for every run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

log = logging.getLogger("vexpress.demo")


class Phases:
    """Wall-clock time per phase (printed as it goes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.t0 = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        print(f"[demo] {name} ...", flush=True)
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
            print(f"[demo] {name}: {self.seconds[name]:.1f} s (total {self.total:.1f} s)", flush=True)

    @property
    def total(self) -> float:
        return time.perf_counter() - self.t0


def _tqdm(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------------------
def train_overrides(cfg: Any, run: str, extra: Sequence[str] = ()) -> list[str]:
    """``vexpress-train`` overrides of one demo run (its experiment + the demo's folders)."""
    out = Path(cfg.output_dir)
    return [f"experiment={cfg.runs[run]}", f"paths.output_dir={out / 'runs' / run}",
            f"paths.root_dir={cfg.paths.root_dir}", f"paths.cache_dir={cfg.paths.cache_dir}",
            *list(cfg.get("train_overrides") or []), *extra]


def compose_train(overrides: Sequence[str]):
    from hydra import compose

    return compose(config_name="train", overrides=list(overrides))


# ---------------------------------------------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------------------------------------------
def ensure_data(data_cfg: Any) -> Path:
    from omegaconf import OmegaConf

    from vexpress.synthetic import ensure_synthetic_dataset

    bar = _tqdm(0, "synthetic clips")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        return ensure_synthetic_dataset(OmegaConf.to_container(data_cfg.synthetic, resolve=True),
                                        cache_dir=data_cfg.cache_dir, workers=int(data_cfg.workers_for_synthesis),
                                        progress=progress)
    finally:
        bar.close()


def load_frames(records: Sequence[Any]) -> torch.Tensor:
    """Every frame of ``records`` as (N, 3, H, W) in [-1, 1]."""
    from vexpress.data.video import read_all_frames

    frames = np.concatenate([read_all_frames(r.video)[: r.num_frames] for r in records])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def mouth_masks(records: Sequence[Any], scale: float = 1.5) -> torch.Tensor:
    """(N, 1, H, W) boxes around each frame's lip landmarks (scaled ``scale`` x), in frame order of
    :func:`load_frames`."""
    from vexpress.data.talking_face import box_mask, lip_boxes

    masks = []
    for r in records:
        boxes = lip_boxes(r.mouth.numpy()[: r.num_frames], scale)
        masks.append(np.stack([box_mask(b, int(r.height), int(r.width)) for b in boxes]))
    return torch.from_numpy(np.concatenate(masks))[:, None]


def ensure_vae(cfg: Any, root: Path, train_records: Sequence[Any], latent_downscale: int):
    from vexpress.training.vae import load_or_fit_tiny_vae

    vcfg = dict(cfg.vae)
    bar = _tqdm(int(vcfg["steps"]), "fit tiny VAE")

    def progress(step: int, total: int, loss: float) -> None:
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.4f}")

    try:
        return load_or_fit_tiny_vae(Path(cfg.paths.cache_dir) / "tiny_vae", lambda: load_frames(train_records),
                                    data_id=root.name, latent_downscale=latent_downscale, progress=progress,
                                    weights_fn=lambda: mouth_masks(train_records), **vcfg)
    finally:
        bar.close()


def ensure_latents(cfg: Any, root: Path, records: Sequence[Any], vae: Any, vae_info: Mapping[str, Any],
                   image_size: int, crop: str):
    from vexpress.data.cache import INDEX, LatentCache, build_latent_cache

    key = f"{root.name}-{vae_info.get('key', 'vae')}-{image_size}-{crop}-{int(bool(cfg.latent_cache.flip))}"
    path = Path(cfg.paths.cache_dir) / "latents" / key
    if (path / INDEX).is_file():
        return LatentCache(path)
    tmp = path.with_name(f".{path.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    build_latent_cache(records, vae, tmp, image_size=image_size, crop=crop, flip=bool(cfg.latent_cache.flip),
                       scaling_factor=float(vae.config.scaling_factor), batch_size=int(cfg.latent_cache.batch_size))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return LatentCache(path)


def train_runs(cfg: Any, latent_dir: Path, phases: Phases) -> dict[str, list[dict]]:
    """Train every demo run; identical stages (same stage key) are trained once and copied."""
    from vexpress.cli.train import run_curriculum, stage_config
    from hydra.utils import instantiate

    results: dict[str, list[dict]] = {}
    trained: dict[str, Path] = {}  # stage key -> a finished stage folder
    for run in cfg.runs:
        overrides = train_overrides(cfg, run, [f"data.latent_cache={latent_dir}"])
        tcfg = compose_train(overrides)
        curriculum = instantiate(tcfg.curriculum, _convert_="all")
        root = Path(tcfg.paths.output_dir)
        if cfg.get("share_identical_stages", True):
            # reuse finished stages of earlier runs with the same key (their inputs are identical by construction)
            for index in range(len(curriculum.stages)):
                try:
                    scfg = stage_config(tcfg, curriculum, index, overrides, lambda o, n: compose_train(
                        [x for x in o if not x.startswith("stage=")] + [f"stage={n}"]))
                except Exception:  # noqa: BLE001 - the previous stage is not done yet: stop looking
                    break
                src = trained.get(scfg.stage_key)
                dst = curriculum.stage_dir(root, index)
                if src is not None and not (dst / "export" / "DONE").is_file():
                    shutil.rmtree(dst, ignore_errors=True)
                    shutil.copytree(src, dst)
                    print(f"[demo] {run}: stage {index} ({curriculum.stages[index]}) is identical to a trained one; "
                          f"reused {src}", flush=True)
                if not (dst / "export" / "DONE").is_file():
                    break
        t = time.perf_counter()
        res = run_curriculum(tcfg, overrides, lambda o, n: compose_train(
            [x for x in o if not x.startswith("stage=")] + [f"stage={n}"]))
        phases.seconds[f"train/{run}"] = time.perf_counter() - t
        for r, name in zip(res, curriculum.stages):
            r["stage_dir"] = str(curriculum.stage_dir(root, r["index"]))
            if r.get("stage_key"):
                trained.setdefault(r["stage_key"], Path(r["stage_dir"]))
            r.pop("trainer", None)
            r.pop("model", None)
        results[run] = res
    return results


def _collate(samples: Sequence[Mapping[str, Any]]) -> dict:
    out = {}
    for k in samples[0]:
        v = [s[k] for s in samples]
        out[k] = torch.stack(v) if isinstance(v[0], torch.Tensor) else v
    return out


def probe_batch(tcfg: Any, latent_dir: Path, clips: int, frames: int) -> dict:
    """A fixed held-out batch (posterior means, no flip) for the influence probe."""
    from hydra.utils import instantiate

    dm = instantiate(tcfg.data, num_frames=frames, batch_size=clips, latent_cache=str(latent_dir),
                     sample_latents=False, num_workers=0, persistent_workers=False)
    dm.setup("validate")
    ds = dm.val_dataset if dm.val_dataset is not None else dm.train_dataset
    return _collate([ds[i] for i in range(min(clips, len(ds)))])


def probe_exports(cfg: Any, tcfg: Any, latent_dir: Path, results: Mapping[str, list]) -> dict[str, list[dict]]:
    from hydra.utils import instantiate

    from vexpress.models.weights import load_export
    from vexpress.training.noise import DiffusionTargets
    from vexpress.training.probe import influence_on_batch

    batch = probe_batch(tcfg, latent_dir, int(cfg.probe.clips), int(cfg.probe.frames))
    targets = DiffusionTargets(instantiate(tcfg.noise_scheduler))
    out: dict[str, list[dict]] = {}
    for run, stages in results.items():
        rows = []
        for r in stages:
            net = load_export(Path(r["stage_dir"]) / "export", load_vae=False).net
            vals = influence_on_batch(net, targets, batch["target_latents"], ref_latents=batch["reference_latents"],
                                      audio_windows=batch["audio_windows"], kps_images=batch["kps_images"],
                                      lip_masks=batch["lip_masks"], timesteps=list(cfg.probe.timesteps),
                                      seed=int(cfg.probe.seed))
            rows.append({"stage": r["stage"], "index": r["index"], **vals})
        out[run] = rows
    return out


# ---------------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------------
def _pipeline(export_dir: Path, ecfg: Any):
    from vexpress.audio.encoders import build_audio_encoder
    from vexpress.pipelines import VExpressPipeline

    return VExpressPipeline.from_export(export_dir, audio_encoder=build_audio_encoder(
        dict(ecfg.audio_encoder) if ecfg.get("audio_encoder") else None), sampler=str(ecfg.sampler), device="cpu",
        dtype="fp32")


def generate_clip(pipe: Any, record: Any, audio_record: Any, num_frames: int, ecfg: Any) -> np.ndarray:
    """Self-reconstruction of the first ``num_frames`` frames of ``record`` driven by ``audio_record``'s audio."""
    fps = float(record.fps)
    n = min(int(num_frames), int(record.num_frames))
    samples = int(round(n / fps * 16000))
    wave = audio_record.audio[:samples].numpy().astype(np.float32)
    if wave.shape[0] < samples:
        wave = np.pad(wave, (0, samples - wave.shape[0]))
    kps = record.kps.numpy()[:n]
    reference = record.frames([0])[0]
    out = pipe(reference, (wave, 16000), kps=kps, reference_kps=kps[0], retarget="no_retarget",
               height=int(record.height), width=int(record.width), fps=fps, crop="none",
               num_inference_steps=int(ecfg.num_inference_steps), guidance_scale=float(ecfg.guidance_scale),
               audio_guidance_scale=None if ecfg.audio_guidance_scale is None else float(ecfg.audio_guidance_scale),
               reference_attention_weight=float(ecfg.reference_attention_weight),
               audio_attention_weight=float(ecfg.audio_attention_weight), median_filter=bool(ecfg.median_filter),
               seed=int(ecfg.seed), return_frames=True, progress=False)
    return out.frames.numpy()


def evaluate_export(export_dir: Path, label: str, records: Sequence[Any], shuffled: Mapping[str, Any], ecfg: Any,
                    out_dir: Path, include_gt: bool) -> dict[str, Any]:
    from vexpress.evaluation import SyntheticItem, evaluate_synthetic
    from vexpress.evaluation.synthetic import mouth_control_summary

    pipe = _pipeline(export_dir, ecfg)
    items = []
    bar = _tqdm(2 * len(records), f"generate {label}")
    try:
        for rec in records:
            for src in (rec, shuffled[rec.id]):
                frames = generate_clip(pipe, rec, src, int(ecfg.frames), ecfg)
                items.append(SyntheticItem(rec, frames=frames, fps=float(rec.fps),
                                           audio_record=None if src is rec else src))
                bar.update(1)
    finally:
        bar.close()
    res = evaluate_synthetic(items, run_name=label, output_dir=None, include_gt=include_gt,
                             fit_pose=bool(ecfg.fit_pose), frame_stride=int(ecfg.frame_stride))
    res.write(out_dir)
    control = mouth_control_summary(res)
    row = res.summary.get(label, {})
    srow = res.summary.get(f"{label} [shuffled audio]", {})
    out = {
        "mouth_err_correct": control["mouth_err_correct"], "mouth_err_shuffled": control["mouth_err_shuffled"],
        "ratio": control["ratio"], "mouth_corr": row.get("mouth_corr"),
        "mouth_corr_shuffled": srow.get("mouth_corr"), "identity_err": row.get("identity_err"),
        "pose_err": row.get("pose_err"),
    }
    out["per_clip"] = per_clip_errors(out_dir / "per_clip.csv")
    # what was scored (not what the config asked for): clips with a model row, frames generated per clip
    out["clips"] = len(out["per_clip"])
    frame_counts = sorted({int(it.frames.shape[0]) for it in items})
    out["frames"] = frame_counts[0] if len(frame_counts) == 1 else frame_counts
    if include_gt:
        out["ground_truth"] = {k: v for k, v in res.summary.get("ground truth", {}).items()}
    return out


PAIRED_METRICS = ("mouth_err_correct", "mouth_err_shuffled", "identity_err", "pose_err")


def per_clip_errors(csv_path: Path) -> dict[str, dict[str, float]]:
    """clip id -> its errors (the model rows of an evaluation's ``per_clip.csv``), for paired comparisons."""
    import csv

    out: dict[str, dict[str, float]] = {}
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("role") != "model":
                continue
            d = out.setdefault(row["clip_id"], {})
            if row.get("condition") == "shuffled":
                d["mouth_err_shuffled"] = float(row["mouth_err"])
            else:
                d.update(mouth_err_correct=float(row["mouth_err"]), identity_err=float(row["identity_err"]),
                         pose_err=float(row["pose_err"]))
    return out


def paired_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per metric: mean and standard error over clips of (a - b), clip by clip (the same clips, audio, seeds)."""
    pa, pb = a.get("per_clip") or {}, b.get("per_clip") or {}
    clips = sorted(set(pa) & set(pb))
    out = {}
    for m in PAIRED_METRICS:
        d = np.array([pa[c][m] - pb[c][m] for c in clips if m in pa[c] and m in pb[c]], dtype=np.float64)
        d = d[np.isfinite(d)]
        if d.size:
            se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan")
            out[m] = {"mean": float(d.mean()), "se": se, "n": int(d.size)}
    return out


@torch.no_grad()
def evaluate_vae_floor(vae: Any, records: Sequence[Any], ecfg: Any) -> dict[str, Any]:
    """The same measurement on VAE reconstructions of the ground-truth frames: the best a latent model can score."""
    from vexpress.evaluation import SyntheticItem, evaluate_synthetic

    items = []
    for rec in records:
        frames = rec.frames(range(min(int(ecfg.frames), int(rec.num_frames))))  # only the evaluated frames
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        out = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        items.append(SyntheticItem(rec, frames=out.add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy(),
                                   fps=float(rec.fps)))
    res = evaluate_synthetic(items, run_name="vae", include_gt=False, fit_pose=bool(ecfg.fit_pose),
                             frame_stride=int(ecfg.frame_stride))
    return {k: v for k, v in res.summary.get("vae", {}).items()}


def evaluation_targets(cfg: Any, results: Mapping[str, list]) -> list[tuple[str, Path]]:
    """(label, export) pairs: every run's final export, plus the earlier stages of the runs in ``eval.stages_of``."""
    out = []
    for run, stages in results.items():
        stage_list = list(stages)
        if run in list(cfg.eval.get("stages_of") or []):
            for r in stage_list[:-1]:
                out.append((f"{run}/{r['index']}_{r['stage']}", Path(r["stage_dir"]) / "export"))
        last = stage_list[-1]
        out.append((run, Path(last["stage_dir"]) / "export"))
    return out


# ---------------------------------------------------------------------------------------------------------------
# sample video
# ---------------------------------------------------------------------------------------------------------------
def sample_video(cfg: Any, results: Mapping[str, list], records: Sequence[Any], out: Path) -> Path:
    from vexpress.data.video import write_video

    scfg = cfg.sample_video
    rec = records[int(scfg.clip_index) % len(records)]
    n = min(int(round(float(scfg.seconds) * float(rec.fps))), rec.num_frames)
    panels = [rec.frames(range(n))]
    for run in scfg.runs:
        export = Path(results[run][-1]["stage_dir"]) / "export"
        panels.append(generate_clip(_pipeline(export, cfg.eval), rec, rec, n, cfg.eval)[:n])
    frames = np.concatenate(panels, axis=2)
    wave = rec.audio[: int(round(n / float(rec.fps) * 16000))].numpy()
    path = out / "sample.mp4"
    write_video(path, frames, float(rec.fps), audio=wave, audio_rate=16000, crf=14)
    return path


# ---------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------
def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else str(v)


def goals(evals: Mapping[str, Mapping[str, Any]], cfg: Any) -> dict[str, Any]:
    """The demo's claims, checked on the measured figures (never used to change anything)."""
    rec = evals.get("recipe")
    if rec is None:
        return {}
    g: dict[str, Any] = {"ratio_min": float(cfg.goals.ratio_min)}
    g["recipe_ratio"] = rec["ratio"]
    g["recipe_uses_audio"] = bool(rec["ratio"] is not None and rec["ratio"] >= float(cfg.goals.ratio_min))
    tol = float(cfg.goals.no_worse_tolerance)
    for ab in [r for r in evals if r != "recipe" and "/" not in r]:
        a = evals[ab]
        g[f"beats_{ab}_on_mouth"] = bool(rec["mouth_err_correct"] < a["mouth_err_correct"])
        g[f"identity_not_worse_than_{ab}"] = bool(rec["identity_err"] <= a["identity_err"] * (1 + tol))
        g[f"pose_not_worse_than_{ab}"] = bool(rec["pose_err"] <= a["pose_err"] * (1 + tol))
    g["all_met"] = all(v for k, v in g.items() if isinstance(v, bool))
    return g


def paired_table(evals: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """recipe - each ablation, clip by clip (how large the differences are next to the clip-to-clip noise)."""
    rec = evals.get("recipe")
    if rec is None:
        return {}
    return {ab: paired_differences(rec, evals[ab]) for ab in evals if ab != "recipe" and "/" not in ab}


def write_plot(path: Path, evals: Mapping[str, Mapping[str, Any]], probes: Mapping[str, list],
               vae_floor: Mapping[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(evals)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    x = np.arange(len(labels))
    ax = axes[0]
    ax.bar(x - 0.2, [evals[k]["mouth_err_correct"] for k in labels], 0.4, label="correct audio")
    ax.bar(x + 0.2, [evals[k]["mouth_err_shuffled"] for k in labels], 0.4, label="shuffled audio")
    gt = next((e["ground_truth"].get("mouth_err") for e in evals.values() if e.get("ground_truth")), None)
    if gt is not None and math.isfinite(gt):
        ax.axhline(gt, color="k", ls=":", lw=1, label="ground-truth video (floor)")
    vf = (vae_floor or {}).get("mouth_err")
    if vf is not None and math.isfinite(vf):
        ax.axhline(vf, color="tab:red", ls="--", lw=1, label="VAE reconstruction (latent floor)")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_title("held-out mouth error (lower = better)")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.bar(x - 0.2, [evals[k]["identity_err"] for k in labels], 0.4, label="identity error", color="tab:green")
    ax2 = ax.twinx()
    ax2.bar(x + 0.2, [evals[k]["pose_err"] for k in labels], 0.4, label="pose error (px)", color="tab:purple")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_title("identity (left axis) and pose error (right, px)")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    ax = axes[2]
    styles = {"audio": "-", "reference": "--", "kps": ":"}
    longest = max((len(rows) for rows in probes.values()), default=1)
    for run, rows in probes.items():
        xs = [r["index"] + longest - len(rows) for r in rows]  # a shorter curriculum ends at the last stage
        for cond, ls in styles.items():
            ax.plot(xs, [r[cond] for r in rows], ls, marker="o", label=f"{run}: {cond}")
    ax.set_xlabel("stage (image, audio+motion, joint); single-stage runs at the end")
    ax.set_title("condition influence on held-out batch")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    from vexpress.utils.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def scored_protocol(eval_cfg: Mapping[str, Any], evals: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The evaluation protocol as it was carried out: ``clips`` / ``frames`` are the counts actually scored (every
    run is scored on the same clips), the configured values are kept as ``clips_requested`` / ``frames_requested``."""
    out = dict(eval_cfg)
    out["clips_requested"], out["frames_requested"] = out.pop("clips", None), out.pop("frames", None)
    scored = next(iter(evals.values()), None)
    out["clips"] = scored.get("clips") if scored else 0
    out["frames"] = scored.get("frames") if scored else 0
    out["clip_ids"] = sorted(scored.get("per_clip") or {}) if scored else []
    return out


def _protocol_sentence(report: Mapping[str, Any]) -> str:
    p = report.get("protocol") or {}
    frames = p.get("frames")
    frames = "-".join(str(f) for f in (frames[0], frames[-1])) if isinstance(frames, list) and frames else frames
    text = f"{p.get('clips', 0)} held-out clips x {frames} frames evaluated per run"
    if p.get("clips_requested") is not None and p.get("clips") != p.get("clips_requested"):
        text += f" (eval.clips={p['clips_requested']} requested)"
    return text


def write_report(out: Path, report: Mapping[str, Any]) -> None:
    from vexpress.utils.io import atomic_open, write_json

    write_json(out / "report.json", report)
    evals, probes, g = report["evaluation"], report["probe"], report["goals"]
    lines = ["# vexpress demo report", "",
             f"Synthetic benchmark, tiny model, CPU. Total wall time **{report['seconds']['total']:.0f} s**. "
             f"Held-out identities only: {_protocol_sentence(report)}; protocol in `report.json` (`protocol`).",
             "",
             "## Held-out evaluation", "",
             "| run | mouth err (correct audio) | mouth err (shuffled audio) | shuffled / correct | mouth corr | "
             "identity err | pose err (px) |", "|---|---|---|---|---|---|---|"]
    for label, e in evals.items():
        lines.append(f"| {label} | {_f(e['mouth_err_correct'])} | {_f(e['mouth_err_shuffled'])} | "
                     f"{_f(e['ratio'], 2)} | {_f(e['mouth_corr'], 2)} | {_f(e['identity_err'])} | "
                     f"{_f(e['pose_err'], 2)} |")
    gt = next((e["ground_truth"] for e in evals.values() if e.get("ground_truth")), None)
    vf = report.get("vae_floor") or {}
    if vf:
        lines.append(f"| VAE reconstruction of the ground truth (latent-model floor) | {_f(vf.get('mouth_err'))} | | | "
                     f"{_f(vf.get('mouth_corr'), 2)} | {_f(vf.get('identity_err'))} | {_f(vf.get('pose_err'), 2)} |")
    if gt:
        lines.append(f"| ground-truth video (measurement floor) | {_f(gt.get('mouth_err'))} | | | "
                     f"{_f(gt.get('mouth_corr'), 2)} | {_f(gt.get('identity_err'))} | {_f(gt.get('pose_err'), 2)} |")
    lines += ["", "## Goals", ""]
    for k, v in g.items():
        lines.append(f"- {k}: {_f(v, 2) if isinstance(v, float) else v}")
    paired = report.get("paired") or {}
    if paired:
        lines += ["", "## Paired differences, recipe minus ablation (mean +- standard error over held-out clips)", "",
                  "Negative = the recipe has the lower error. A difference within about two standard errors is not "
                  "distinguishable from clip-to-clip noise at this sample size.", "",
                  "| ablation | clips | mouth err (correct) | mouth err (shuffled) | identity err | pose err (px) |",
                  "|---|---|---|---|---|---|"]
        for ab, d in paired.items():
            cells = [f"{_f(d[m]['mean'])} +- {_f(d[m]['se'])}" if m in d else "n/a" for m in PAIRED_METRICS]
            n = max((v["n"] for v in d.values()), default=0)
            lines.append(f"| {ab} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Condition influence per stage (||pred - pred without c|| / ||pred||, held-out batch)", "",
              "| run | stage | audio | audio (lip) | reference | kps |", "|---|---|---|---|---|---|"]
    for run, rows in probes.items():
        for r in rows:
            lines.append(f"| {run} | {r['index']}_{r['stage']} | {_f(r.get('audio'))} | {_f(r.get('audio_lip'))} | "
                         f"{_f(r.get('reference'))} | {_f(r.get('kps'))} |")
    lines += ["", "## Wall time per phase", "", "| phase | seconds |", "|---|---|"]
    for k, v in report["seconds"].items():
        lines.append(f"| {k} | {v:.1f} |")
    lines += ["", "Files: `report.json`, `report.png`, `sample.mp4` (ground truth | "
              + " | ".join(report.get("sample_video_runs", [])) + ", with the clip's audio), `eval/<run>/` "
              "(per-clip tables), `runs/<run>/stages/*/export` (weights in the official layout).", ""]
    with atomic_open(out / "report.md", "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))


# ---------------------------------------------------------------------------------------------------------------
def run_demo(cfg: Any) -> dict[str, Any]:
    from vexpress.data.records import load_manifest
    from vexpress.evaluation import shuffled_audio_sources

    torch.set_num_threads(max(1, int(cfg.get("threads") or torch.get_num_threads())))
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    phases = Phases()
    first_run = next(iter(cfg.runs))
    tcfg = compose_train(train_overrides(cfg, first_run))

    with phases("data"):
        root = ensure_data(tcfg.data)
        train_records = load_manifest(root, split=tcfg.data.train_split)
        held = load_manifest(root, split=tcfg.data.val_split)
        all_records = load_manifest(root)
    with phases("vae"):
        vae, vae_info = ensure_vae(cfg, root, train_records, int(tcfg.data.latent_downscale))
    with phases("latents"):
        cache = ensure_latents(cfg, root, all_records, vae, vae_info, int(tcfg.data.image_size), str(tcfg.data.crop))
    with phases("train"):
        results = train_runs(cfg, cache.path, phases)
    with phases("probe"):
        probes = probe_exports(cfg, tcfg, cache.path, results)
    evals: dict[str, Any] = {}
    with phases("evaluate"):
        first = int(cfg.eval.get("first_clip", 0)) % max(1, len(held))
        records = (held[first:] + held[:first])[: int(cfg.eval.clips)]
        if len(records) < int(cfg.eval.clips):
            log.warning("eval.clips=%d but the held-out split has %d clips: evaluating %d", int(cfg.eval.clips),
                        len(held), len(records))
        shuffled = shuffled_audio_sources(records, seed=int(cfg.eval.shuffle_seed))
        for i, (label, export) in enumerate(evaluation_targets(cfg, results)):
            t = time.perf_counter()
            evals[label] = evaluate_export(export, label, records, shuffled, cfg.eval,
                                           out / "eval" / label.replace("/", "_"), include_gt=i == 0)
            phases.seconds[f"evaluate/{label}"] = time.perf_counter() - t
        vae_floor = evaluate_vae_floor(vae, records, cfg.eval)
    video = None
    if cfg.sample_video.get("enabled", True):
        with phases("sample_video"):
            video = sample_video(cfg, results, held, out)
    g = goals(evals, cfg)
    report = {
        "format": "vexpress-demo-report", "version": 1, "train_seed": int(tcfg.seed),
        "seconds": {**phases.seconds, "total": phases.total},
        "data": {"root": str(root), "train_clips": len(train_records), "heldout_clips": len(held)},
        "vae": {k: v for k, v in vae_info.items() if k != "key"},
        "train": {run: [{k: v for k, v in r.items() if k in ("stage", "index", "global_step", "skipped",
                                                              "stage_key", "stage_dir", "probe", "metrics")}
                        for r in rs] for run, rs in results.items()},
        "probe": probes, "evaluation": evals, "goals": g, "paired": paired_table(evals), "vae_floor": vae_floor,
        "protocol": scored_protocol(_plain(cfg.eval), evals),
        "experiments": {run: exp for run, exp in cfg.runs.items()},
        "sample_video": str(video) if video else None,
        "sample_video_runs": list(cfg.sample_video.runs),
    }
    with phases("report"):
        write_plot(out / "report.png", evals, probes, vae_floor)
        write_report(out, {**report, "seconds": {**phases.seconds, "total": phases.total}})
    report["seconds"] = {**phases.seconds, "total": phases.total}
    from vexpress.utils.io import write_json

    write_json(out / "report.json", report)
    return report


def _plain(node: Any) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if not isinstance(node, dict) else dict(node)
