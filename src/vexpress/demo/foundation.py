"""``vexpress-foundation``: pretrain the embedded foundation that every demo run starts from.

V-Express does not learn faces: its stage 1 starts from SD1.5 and Moore-AnimateAnyone weights and spends its budget
on what is new. The synthetic world's equivalent is made here, once, and shipped in the repository
(``experiments/foundation/weights``):

1. ``data``: a pretraining split of many synthetic identities (``conf/experiment/foundation.yaml``: another seed
   than the demo's benchmark, so no demo identity, trained or held out, is ever seen);
2. ``vae``: the tiny ``AutoencoderKL`` fitted on its frames (mouth-weighted, as the demo's was);
   ``vae_decoder``: its decoder half fine-tuned further, the encoder frozen (the synthetic world's sd-vae-ft-mse:
   the latents do not change, the decoded frames improve);
3. ``latents``: a latent cache of every clip;
4. ``audio_encoder``: the synthetic world's wav2vec2-base-960h (:mod:`vexpress.audio.phonetic`), a small speech
   encoder trained to recognise the phones of the pretraining split's utterances;
5. ``train``: the image stage (reference + keypoints -> frame) through the same curriculum loop as
   ``vexpress-train``;
6. ``ship``: ReferenceNet, the denoiser's 2D part and the V-Kps guider in the official file layout as float16
   safetensors, the VAE, the audio encoder, and ``foundation.json`` with the command, commit, wall time and loss
   curve (:func:`vexpress.models.weights.save_foundation`).

``only=audio_encoder`` fits the audio encoder alone and adds it to the existing foundation, leaving the rest as it
is (:func:`vexpress.models.weights.add_foundation_audio_encoder`); ``only=vae_decoder`` fine-tunes the existing
foundation's VAE decoder and puts it in place (:func:`vexpress.models.weights.replace_foundation_vae_decoder`, which
refuses a VAE whose encoder changed); ``only=networks`` pretrains the networks again (phases 3 and 5) on the
existing foundation's VAE and replaces them (:func:`vexpress.models.weights.replace_foundation_networks`).
"""

from __future__ import annotations

import csv
import logging
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from vexpress.errors import InputError
from vexpress.utils.paths import REPO_ROOT

log = logging.getLogger("vexpress.foundation")

#: The shipped foundation must stay small enough to live in the repository (issue 10: 12 MB for all files).
MAX_BYTES = 12 * 1024 * 1024


def git_commit(root: Path = REPO_ROOT) -> str:
    """The checkout's commit (``+dirty`` when the tree has changes), or ``unknown`` outside a git checkout."""
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def loss_curve(metrics_csv: Path, every: int = 1) -> list[dict[str, float]]:
    """``[{step, loss}]`` from a Lightning CSV logger's ``metrics.csv`` (the ``train/loss`` column)."""
    if not metrics_csv.is_file():
        return []
    rows = []
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            loss = next((row[k] for k in ("train/loss", "train/loss_step", "loss") if row.get(k)), None)
            if loss is None or not row.get("step"):
                continue
            rows.append({"step": int(float(row["step"])), "loss": float(loss)})
    return rows[::max(1, every)]


def train_overrides(cfg: Any, work: Path, extra: Sequence[str] = ()) -> list[str]:
    return [f"experiment={cfg.experiment}", f"paths.output_dir={work / 'run'}", f"paths.root_dir={cfg.paths.root_dir}",
            f"paths.cache_dir={cfg.paths.cache_dir}", f"model.vae.path={work / 'vae'}",
            *list(cfg.get("train_overrides") or []), *extra]


def utterance_targets(utterances: Iterable[tuple[Any, Any, Any]], front_end: Mapping[str, Any]) -> list[tuple]:
    """(waveform, voicing, vowel_weight) per utterance -> (log-mel (N, n_mels), level (N,), phone (N,)): the
    phonetic encoder's training data (:func:`vexpress.synthetic.speech.phonetic_targets` on its front end's rows)."""
    import numpy as np
    import torch

    from vexpress.audio.encoders import LogMelEncoder
    from vexpress.synthetic.speech import phonetic_targets

    front = LogMelEncoder(**front_end)
    out = []
    for wave, voicing, vowel_weight in utterances:
        mel = front.encode(torch.as_tensor(np.asarray(wave), dtype=torch.float32))
        level, phone = phonetic_targets(np.asarray(voicing), np.asarray(vowel_weight), mel.shape[0], front.hop)
        out.append((mel, torch.from_numpy(level), torch.from_numpy(phone)))
    return out


def fit_audio_encoder(acfg: Any, synthetic: Any, out: Path) -> dict[str, Any]:
    """Train the phonetic audio encoder on the speech of the pretraining split ``synthetic`` (a
    :class:`~vexpress.synthetic.generate.SynthConfig` mapping; its heldout identities are scored, not trained on)
    and write it to ``out``; returns how it was made."""
    import time

    from omegaconf import OmegaConf

    from vexpress.audio.encoders import PhoneticEncoder
    from vexpress.audio.phonetic import save_phonetic_encoder, train_phonetic_net
    from vexpress.synthetic.generate import SynthConfig, clip_speech, identity_ids

    t0 = time.perf_counter()
    plain = OmegaConf.to_container(synthetic, resolve=True) if OmegaConf.is_config(synthetic) else dict(synthetic)
    sc = SynthConfig.from_dict(plain)
    train, held = [], []
    for index, _, split in identity_ids(sc):
        for clip in range(sc.clips_per_identity):
            _, wave, voicing, vowel_weight = clip_speech(sc, index, clip)
            (train if split == "train" else held).append((wave, voicing, vowel_weight))
    front = dict(acfg.front_end)
    data = utterance_targets(train + held, front)
    net, record = train_phonetic_net(data, steps=int(acfg.steps), batch_size=int(acfg.batch_size), lr=float(acfg.lr),
                                     seed=int(acfg.seed), level_weight=float(acfg.level_weight),
                                     network=dict(acfg.network), heldout=len(held), log_every=50)
    record = {**record, "data": {"synthetic_seed": sc.seed, "train_utterances": len(train),
                                 "heldout_utterances": len(held), "seconds_each": sc.seconds},
              "wall_seconds": round(time.perf_counter() - t0, 1)}
    save_phonetic_encoder(out, net, front, {"fit": record})
    PhoneticEncoder(out)  # it loads (strictly) before anything ships it
    log.info("audio encoder: phone accuracy %.4f, voicing-level MAE %.4f on %d held-out utterances (%.0f s)",
             record["heldout"]["phone_acc"], record["heldout"]["level_mae"], len(held), record["wall_seconds"])
    return record


def fit_vae_decoder(dcfg: Any, vae: Any, train_records: Sequence[Any], held_records: Sequence[Any],
                    mouth_weight: float) -> dict[str, Any]:
    """Fine-tune the decoder half of ``vae`` in place on the frames of ``train_records`` (the encoder, and so the
    latents, unchanged: the synthetic world's sd-vae-ft-mse); returns how, with the reconstruction of the frames
    of ``held_records`` before and after."""
    import time

    from vexpress.demo.phases import progress_bar
    from vexpress.demo.prepare import load_frames, mouth_masks
    from vexpress.training.vae import finetune_decoder, reconstruction_error, region_weights

    t0 = time.perf_counter()
    frames = load_frames(train_records)
    weights = region_weights(mouth_masks(train_records), mouth_weight) if mouth_weight != 1.0 else None
    held = load_frames(held_records) if held_records else None
    before = reconstruction_error(vae, held) if held is not None else {}
    bar = progress_bar(int(dcfg.steps), "fine-tune the VAE decoder")
    try:
        fit = finetune_decoder(vae, frames, steps=int(dcfg.steps), batch_size=int(dcfg.batch_size),
                               lr=float(dcfg.lr), seed=int(dcfg.seed), weights=weights,
                               progress=lambda step, loss: bar.update(1))
    finally:
        bar.close()
    after = reconstruction_error(vae, held) if held is not None else {}
    record = {"steps": int(dcfg.steps), "batch_size": int(dcfg.batch_size), "lr": float(dcfg.lr),
              "seed": int(dcfg.seed), "mouth_weight": float(mouth_weight), "train_frames": int(frames.shape[0]),
              "train": {k: fit[k] for k in ("final_loss", "mae", "psnr")}, "loss_curve": fit["loss_curve"],
              "heldout_frames": 0 if held is None else int(held.shape[0]), "heldout_before": before,
              "heldout_after": after, "wall_seconds": round(time.perf_counter() - t0, 1)}
    if before:
        log.info("VAE decoder: held-out PSNR %.2f -> %.2f dB, MAE %.4f -> %.4f (%.0f s)", before["psnr"],
                 after["psnr"], before["mae"], after["mae"], record["wall_seconds"])
    return record


def refit_vae_decoder(cfg: Any) -> dict[str, Any]:
    """``only=vae_decoder``: fine-tune the decoder of the existing foundation's VAE (``cfg.output_dir``) on the
    pretraining frames and put it in place; every other file, and the encoder, stay as they are."""
    from hydra import compose

    from vexpress.data.records import load_manifest
    from vexpress.demo.prepare import ensure_data
    from vexpress.models.weights import load_foundation_vae, replace_foundation_vae_decoder

    commit = git_commit()
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    tcfg = compose(config_name="train", overrides=train_overrides(cfg, work))
    root = ensure_data(tcfg.data)
    vae = load_foundation_vae(cfg.output_dir)
    record = fit_vae_decoder(cfg.vae_decoder, vae, load_manifest(root, split=tcfg.data.train_split),
                             load_manifest(root, split=tcfg.data.val_split), float(cfg.vae.mouth_weight))
    record = {**record, "command": "vexpress-foundation " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
              "commit": commit}
    size = replace_foundation_vae_decoder(cfg.output_dir, vae, record)
    print(f"[foundation] {cfg.output_dir}: VAE decoder fine-tuned ({size / 2**20:.2f} MB) in "
          f"{record['wall_seconds']:.0f} s", flush=True)
    return record


def add_audio_encoder(cfg: Any) -> dict[str, Any]:
    """``only=audio_encoder``: fit the audio encoder and add it to the existing foundation ``cfg.output_dir``."""
    from hydra import compose

    from vexpress.models.weights import add_foundation_audio_encoder

    commit = git_commit()
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    tcfg = compose(config_name="train", overrides=train_overrides(cfg, work))
    record = fit_audio_encoder(cfg.audio_encoder, tcfg.data.synthetic, work / "audio_encoder")
    record = {**record, "command": "vexpress-foundation " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
              "commit": commit}
    size = add_foundation_audio_encoder(cfg.output_dir, work / "audio_encoder", record)
    print(f"[foundation] {cfg.output_dir}: audio encoder added ({size / 2**20:.2f} MB) in "
          f"{record['wall_seconds']:.0f} s", flush=True)
    return record


def pretrain_networks(cfg: Any, work: Path, root: Path, all_records: Sequence[Any], vae: Any,
                      vae_info: Mapping[str, Any], vae_dir: Path, phases: Any) -> tuple[Any, dict[str, Any]]:
    """The ``latents`` and ``train`` phases: the experiment's image stage on the latents of ``vae`` through the same
    curriculum loop as ``vexpress-train``. Returns the trained network and what the manifest says of its training."""
    import torch
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from vexpress.data.records import load_manifest
    from vexpress.demo.prepare import ensure_latents
    from vexpress.models.weights import load_export
    from vexpress.training.runner import CurriculumRunner

    base = train_overrides(cfg, work, [f"model.vae.path={vae_dir}"])
    tcfg = compose(config_name="train", overrides=base)
    with phases("latents"):
        cache = ensure_latents(cfg, root, all_records, vae, vae_info, int(tcfg.data.image_size), str(tcfg.data.crop))
    with phases("train"):
        overrides = [*base, f"data.latent_cache={cache.path}"]
        tcfg = compose(config_name="train", overrides=overrides)
        results = CurriculumRunner(tcfg, overrides).run()
    curriculum = instantiate(tcfg.curriculum, _convert_="all")
    last = len(curriculum.stages) - 1
    export = curriculum.export_dir(Path(tcfg.paths.output_dir), last)
    curve = loss_curve(Path(tcfg.paths.output_dir) / "csv" / curriculum.stage_id(last) / "metrics.csv")
    info = {
        "experiment": str(cfg.experiment),
        "train_overrides": list(cfg.get("train_overrides") or []),
        "data": {"root": root.name, "train_clips": len(load_manifest(root, split=tcfg.data.train_split)),
                 "clips": len(all_records), "synthetic": dict(tcfg.data.synthetic)},
        "stages": [{"stage": r.get("stage"), "global_step": r.get("global_step"), "skipped": r.get("skipped", False)}
                   for r in results],
        "stage_config": {k: tcfg.stage[k] for k in ("name", "max_steps", "batch_size", "lr")},
        "caption_encoder": OmegaConf.to_container(tcfg.model.get("caption_encoder")) if tcfg.model.get(
            "caption_encoder") else None,
        "loss_curve": curve,
        "loss_first_last_100": _ends(curve),
        "threads": torch.get_num_threads(),
    }
    return load_export(export, load_vae=False).net, info


def retrain_networks(cfg: Any) -> dict[str, Any]:
    """``only=networks``: pretrain the networks again on the latents of the existing foundation's VAE
    (``cfg.output_dir``) and put them in place; the VAE, the audio encoder and their records stay."""
    from hydra import compose

    from vexpress.data.records import load_manifest
    from vexpress.demo.phases import Phases
    from vexpress.demo.prepare import ensure_data, foundation_vae
    from vexpress.models.weights import foundation_vae_dir, read_foundation_manifest, replace_foundation_networks

    commit = git_commit()
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    phases = Phases()
    tcfg = compose(config_name="train", overrides=train_overrides(cfg, work))
    with phases("data"):
        root = ensure_data(tcfg.data)
        all_records = load_manifest(root)
    vae, vae_info = foundation_vae(cfg.output_dir)
    net, info = pretrain_networks(cfg, work, root, all_records, vae, vae_info, foundation_vae_dir(cfg.output_dir),
                                  phases)
    # wall time: the VAE's and audio encoder's phases as first run, this run's latents and training
    seconds = {k: v for k, v in read_foundation_manifest(cfg.output_dir).get("seconds", {}).items() if k != "total"}
    seconds.update(phases.seconds)
    info = {**info, "command": "vexpress-foundation " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "commit": commit, "seconds": {**seconds, "total": sum(seconds.values())},
            "networks_seconds": {**phases.seconds, "total": phases.total}}
    with phases("ship"):
        sizes = replace_foundation_networks(cfg.output_dir, net, info, motion=bool(cfg.get("motion", False)))
    write_curve_plot(work / "loss_curve.png", info["loss_curve"])
    print(f"[foundation] {cfg.output_dir}: networks replaced ({sum(sizes.values()) / 2**20:.2f} MB) in "
          f"{phases.total:.0f} s", flush=True)
    return {**info, "sizes": sizes}


#: what ``only=`` can run alone, each adding to (or replacing one part of) an existing foundation
ONLY_PHASES = {"audio_encoder": add_audio_encoder, "vae_decoder": refit_vae_decoder, "networks": retrain_networks}


def run_foundation(cfg: Any) -> dict[str, Any]:
    """Pretrain and ship the foundation described by ``cfg`` (``conf/foundation.yaml``); returns its manifest."""
    import torch
    from hydra import compose

    from vexpress.data.records import load_manifest
    from vexpress.demo.phases import Phases
    from vexpress.demo.prepare import ensure_data, fit_vae
    from vexpress.models.weights import save_foundation

    torch.set_num_threads(max(1, int(cfg.get("threads") or torch.get_num_threads())))
    if cfg.get("only"):
        if str(cfg.only) not in ONLY_PHASES:
            raise InputError(f"only={cfg.only} is not a phase that can run alone; use only="
                             f"{' or only='.join(ONLY_PHASES)}, or leave it unset")
        return ONLY_PHASES[str(cfg.only)](cfg)
    out = Path(cfg.output_dir)
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    phases = Phases()
    commit = git_commit()  # the code that runs, before anything can change the checkout

    tcfg = compose(config_name="train", overrides=train_overrides(cfg, work))
    with phases("data"):
        root = ensure_data(tcfg.data)
        train_records = load_manifest(root, split=tcfg.data.train_split)
        all_records = load_manifest(root)
    with phases("vae"):
        vae, vae_info = fit_vae(cfg.vae, work / "vae", root, train_records, int(tcfg.data.latent_downscale))
    decoder_fit = None
    if int(cfg.vae_decoder.steps) > 0:
        with phases("vae_decoder"):  # the latents below do not change: only the decoder trains
            decoder_fit = fit_vae_decoder(cfg.vae_decoder, vae, train_records,
                                          load_manifest(root, split=tcfg.data.val_split), float(cfg.vae.mouth_weight))
    with phases("audio_encoder"):
        encoder_fit = fit_audio_encoder(cfg.audio_encoder, tcfg.data.synthetic, work / "audio_encoder")
    net, trained = pretrain_networks(cfg, work, root, all_records, vae, vae_info, work / "vae", phases)
    info = {
        "command": "vexpress-foundation " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "commit": commit,
        **trained,
        "vae_fit": {k: v for k, v in vae_info.items() if k != "key"},
        "audio_encoder_fit": encoder_fit,
        **({"vae_decoder_fit": decoder_fit} if decoder_fit else {}),
    }
    with phases("ship"):
        info["seconds"] = {**phases.seconds, "total": phases.total}
        sizes = save_foundation(out, net, vae, info, motion=bool(cfg.get("motion", False)),
                                audio_encoder=work / "audio_encoder")
    total = sum(sizes.values())
    if total > MAX_BYTES:
        log.warning("the foundation takes %.1f MB, over the %.0f MB the repository allows", total / 2**20,
                    MAX_BYTES / 2**20)
    write_curve_plot(work / "loss_curve.png", info["loss_curve"])
    print(f"[foundation] {out}: {total / 2**20:.2f} MB ({', '.join(f'{k} {v / 2**20:.2f}' for k, v in sizes.items())})"
          f" in {phases.total:.0f} s", flush=True)
    return {**info, "sizes": sizes}


def _ends(curve: list[dict[str, float]], n: int = 100) -> dict[str, float]:
    if not curve:
        return {}
    first = [r["loss"] for r in curve if r["step"] < curve[0]["step"] + n]
    last = [r["loss"] for r in curve if r["step"] > curve[-1]["step"] - n]
    return {"first": sum(first) / len(first), "last": sum(last) / len(last)}


def write_curve_plot(path: Path, curve: list[dict[str, float]]) -> None:
    """The pretraining loss (raw and a 50-step running mean) as a PNG."""
    if not curve:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vexpress.utils.io import atomic_path

    steps = [r["step"] for r in curve]
    loss = [r["loss"] for r in curve]
    k = max(1, min(50, len(loss) // 10))
    smooth = [sum(loss[max(0, i - k + 1): i + 1]) / len(loss[max(0, i - k + 1): i + 1]) for i in range(len(loss))]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, lw=0.5, alpha=0.4, label="train loss")
    ax.plot(steps, smooth, lw=1.5, label=f"running mean ({k} logs)")
    ax.set_yscale("log" if min(loss) > 0 and max(loss) / max(min(loss), 1e-12) > 10 else "linear")
    ax.set_xlabel("step")
    ax.set_title("foundation pretraining (image stage)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
