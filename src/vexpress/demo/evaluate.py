"""The demo's evaluation: generate the held-out clips with a stage export and score them (``vexpress.evaluation``).

Every run generates the same held-out clips with their own audio and with another clip's audio (the shuffled-audio
control), measured against the synthetic ground truth; the VAE reconstruction of the ground truth gives the floor a
latent model can reach. ``sample_video`` renders ground truth | runs side by side.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from vexpress.audio.encoders import build_audio_encoder
from vexpress.data.video import write_video
from vexpress.demo.phases import progress_bar
from vexpress.evaluation.synthetic import SyntheticItem, evaluate_synthetic, mouth_control_summary
from vexpress.pipelines import VExpressPipeline
from vexpress.training.curriculum import stage_id


def export_pipeline(export_dir: Path, ecfg: Any, vae: str | Path | None = None):
    """A CPU fp32 pipeline from a stage export, with the evaluation's audio encoder and sampler (``ecfg``); ``vae``:
    a VAE folder to decode with instead of the export's copy (the demo decodes every run, and its floor, with the
    foundation's)."""
    return VExpressPipeline.from_export(export_dir, vae=vae, audio_encoder=build_audio_encoder(
        dict(ecfg.audio_encoder) if ecfg.get("audio_encoder") else None), sampler=str(ecfg.sampler), device="cpu",
        dtype="fp32")


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def generate_clip(pipe: Any, record: Any, audio_record: Any, num_frames: int, ecfg: Any,
                  reference_index: int = 0) -> np.ndarray:
    """Self-reconstruction of the first ``num_frames`` frames of ``record`` driven by ``audio_record``'s audio, from
    the reference frame ``reference_index`` (the report's: 0)."""
    fps = float(record.fps)
    n = min(int(num_frames), int(record.num_frames))
    samples = int(round(n / fps * 16000))
    wave = audio_record.audio[:samples].numpy().astype(np.float32)
    if wave.shape[0] < samples:
        wave = np.pad(wave, (0, samples - wave.shape[0]))
    kps = record.kps.numpy()[:n]
    reference = record.frames([int(reference_index)])[0]
    out = pipe(reference, (wave, 16000), kps=kps, reference_kps=kps[0], retarget="no_retarget",
               height=int(record.height), width=int(record.width), fps=fps, crop="none",
               num_inference_steps=int(ecfg.num_inference_steps), guidance_scale=float(ecfg.guidance_scale),
               audio_guidance_scale=None if ecfg.audio_guidance_scale is None else float(ecfg.audio_guidance_scale),
               reference_attention_weight=float(ecfg.reference_attention_weight),
               audio_attention_weight=float(ecfg.audio_attention_weight),
               audio_attention_weight_low_noise=_optional_float(ecfg.get("audio_attention_weight_low_noise")),
               low_noise_timestep=int(ecfg.get("low_noise_timestep", 500)), median_filter=bool(ecfg.median_filter),
               seed=int(ecfg.seed), return_frames=True, progress=False)
    return out.frames.numpy()


def evaluate_export(export_dir: Path, label: str, records: Sequence[Any], shuffled: Mapping[str, Any], ecfg: Any,
                    out_dir: Path, include_gt: bool, vae: str | Path | None = None) -> dict[str, Any]:
    return evaluate_pipeline(export_pipeline(export_dir, ecfg, vae), label, records, shuffled, ecfg, out_dir,
                             include_gt)


def evaluate_pipeline(pipe: Any, label: str, records: Sequence[Any], shuffled: Mapping[str, Any], ecfg: Any,
                      out_dir: Path, include_gt: bool,
                      before_clip: Callable[[Any, Any, Any], None] | None = None) -> dict[str, Any]:
    """Each clip of ``records`` generated twice, with its own and with its ``shuffled`` partner's audio, then scored
    (the figures of :func:`evaluate_export`). ``before_clip(pipe, record, audio_record)`` runs before each
    generation (a diagnostic that conditions the pipeline on something else than the audio)."""
    items = []
    bar = progress_bar(2 * len(records), f"generate {label}")
    try:
        for rec in records:
            for src in (rec, shuffled[rec.id]):
                if before_clip is not None:
                    before_clip(pipe, rec, src)
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


def per_clip_errors(csv_path: Path) -> dict[str, dict[str, float]]:
    """clip id -> its errors (the model rows of an evaluation's ``per_clip.csv``), for paired comparisons."""
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


@torch.no_grad()
def vae_roundtrip(vae: Any, frames: np.ndarray) -> np.ndarray:
    """uint8 frames (T, H, W, 3) through the VAE and back (the posterior's mean): what a latent model could at best
    reproduce of them."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    out = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    return out.add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def evaluate_vae_floor(vae: Any, records: Sequence[Any], ecfg: Any) -> dict[str, Any]:
    """The same measurement on VAE reconstructions of the ground-truth frames: the best a latent model can score."""
    items = []
    for rec in records:
        frames = rec.frames(range(min(int(ecfg.frames), int(rec.num_frames))))  # only the evaluated frames
        items.append(SyntheticItem(rec, frames=vae_roundtrip(vae, frames), fps=float(rec.fps)))
    res = evaluate_synthetic(items, run_name="vae", include_gt=False, fit_pose=bool(ecfg.fit_pose),
                             frame_stride=int(ecfg.frame_stride))
    return {k: v for k, v in res.summary.get("vae", {}).items()}


def evaluation_labels(run: str, stages: Sequence[str], earlier: bool) -> list[tuple[str, int]]:
    """(label, stage index) of what the demo evaluates of one run with these curriculum ``stages``: its final
    export (labelled ``run``) and, with ``earlier`` (the run is in ``eval.stages_of``), every earlier stage's
    (labelled ``<run>/<stage id>``) first."""
    out = [(f"{run}/{stage_id(i, name)}", i) for i, name in enumerate(stages[:-1])] if earlier else []
    return out + [(run, len(stages) - 1)]


# ---------------------------------------------------------------------------------------------------------------
# sample video
# ---------------------------------------------------------------------------------------------------------------
def sample_video(cfg: Any, results: Mapping[str, list], records: Sequence[Any], out: Path,
                 vae: str | Path | None = None, run_evals: Mapping[str, Any] | None = None) -> Path:
    """Ground truth | each run of ``sample_video.runs``, side by side, with the clip's audio; each run sampled with
    its own evaluation settings (``run_evals``: run -> settings; default ``cfg.eval``)."""
    scfg = cfg.sample_video
    rec = records[int(scfg.clip_index) % len(records)]
    n = min(int(round(float(scfg.seconds) * float(rec.fps))), rec.num_frames)
    panels = [rec.frames(range(n))]
    for run in scfg.runs:
        export = Path(results[run][-1]["export"])
        ecfg = (run_evals or {}).get(run, cfg.eval)
        panels.append(generate_clip(export_pipeline(export, ecfg, vae), rec, rec, n, ecfg)[:n])
    frames = np.concatenate(panels, axis=2)
    wave = rec.audio[: int(round(n / float(rec.fps) * 16000))].numpy()
    path = out / "sample.mp4"
    write_video(path, frames, float(rec.fps), audio=wave, audio_rate=16000, crf=14)
    return path
