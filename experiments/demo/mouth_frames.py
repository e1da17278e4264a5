"""Where a demo model's mouth error comes from: per-frame mouth opening against the synthetic truth.

The demo report gives one number per clip (mean |measured - true| opening). This script generates the same clips the
same way (``vexpress.demo.evaluate.generate_clip``, the report's sampler settings), keeps the per-frame openings and
splits the error with ``vexpress.evaluation.synthetic.mouth_error_split``: gain and offset of a least-squares line
(over all clips and per clip), what the line leaves, the best whole-frame lag, the error per position in the
generated window, and how large each band of true openings is drawn (closed, small, large). With ``--floor`` the same
split for the VAE round trip of the same frames (the report's VAE): what a perfect latent model would score.

Two probes of where a wrong opening comes from. ``--noise-seeds 42 43 44``: each clip sampled once per sampler noise
seed (the report uses one, ``eval.seed``); the split per seed, of the openings' mean over the seeds (what the model
predicts systematically: the mean's error stays when the error is a bias, falls when it is sampling noise) and their
per-frame spread. ``--reference most_open``: the reference image is the clip's most open frame after the generated
window instead of frame 0 (closed in every synthetic clip): whether the generated mouth leans toward the reference's.

Exploration clips only (the first 8 held-out clips, as every choice of the demo): ``--allow-report-clips`` is for
reporting a finished choice, never for making one.

    .venv/bin/python experiments/demo/mouth_frames.py --demo-output demo_output --run recipe --floor --out mouth.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from _exploration import add_model_arguments, open_model
from omegaconf import OmegaConf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(ap)
    ap.add_argument("--audio-attention-weight", type=float, help="override the report's sampler setting")
    ap.add_argument("--steps", type=int, help="override the report's number of sampling steps")
    ap.add_argument("--floor", action="store_true", help="also split the VAE round trip's error (the floor)")
    ap.add_argument("--noise-seeds", type=int, nargs="+", help="sample each clip with these noise seeds "
                    "(default: the report's eval.seed alone)")
    ap.add_argument("--reference", choices=("first", "most_open"), default="first",
                    help="the reference image: frame 0, as the report (first), or the clip's most open frame after "
                    "the generated window (most_open)")
    ap.add_argument("--out", required=True, help="JSON file: per-clip openings and the summary")
    args = ap.parse_args(argv)

    from vexpress.demo.evaluate import generate_clip
    from vexpress.evaluation.synthetic import mouth_error_split
    from vexpress.synthetic.measure import measure_clip
    from vexpress.utils.io import write_json

    torch.set_num_threads(1)
    overrides = {}
    if args.audio_attention_weight is not None:
        overrides["audio_attention_weight"] = args.audio_attention_weight
    if args.steps is not None:
        overrides["num_inference_steps"] = args.steps
    export, held, pipe, ecfg = open_model(ap, args, overrides)
    proto, frames = dict(OmegaConf.to_container(ecfg)), int(ecfg.frames)
    vae = None
    if args.floor:
        from vexpress.demo.evaluate import vae_roundtrip
        from vexpress.training.vae import load_vae

        vae = load_vae(json.loads((Path(args.demo_output) / "report.json").read_text())["vae"]["dir"])
    fit = bool(ecfg.get("fit_pose", True))
    seeds = args.noise_seeds or [int(ecfg.seed)]
    per_clip, openings = {}, {"model": ([], []), "floor": ([], [])}
    by_seed: list[list[np.ndarray]] = [[] for _ in seeds]
    for rec in held:
        n = min(frames, int(rec.num_frames))
        ref = 0 if args.reference == "first" else reference_after(rec, n)
        videos = []
        for seed in seeds:
            ecfg.seed = seed
            videos.append(generate_clip(pipe, rec, rec, frames, ecfg, ref))
        ecfg.seed = seeds[0]
        clips = {"model": videos[0], **{f"model_seed_{seed}": v for seed, v in zip(seeds[1:], videos[1:])}}
        if vae is not None:
            clips["floor"] = vae_roundtrip(vae, rec.frames(range(len(clips["model"]))))
        per_clip[rec.id] = {"reference": ref}
        measured = {}
        for name, video in clips.items():
            m = measure_clip(video, rec, np.arange(len(video)), fit=fit)
            measured[name] = m["mouth"][:, 0].astype(float)
            gt = m["gt_mouth"][:, 0].astype(float)
            per_clip[rec.id].setdefault("true", gt.round(4).tolist())
            per_clip[rec.id][name] = measured[name].round(4).tolist()
        for name in ("model", "floor"):
            if name in measured:
                openings[name][0].append(measured[name])
                openings[name][1].append(gt)
        for k, name in enumerate(n for n in clips if n.startswith("model")):
            by_seed[k].append(measured[name])
    splits = {name: mouth_error_split(np.stack(ops), np.stack(gts)) for name, (ops, gts) in openings.items() if ops}
    noise = None
    if len(seeds) > 1:
        stack = np.stack([np.stack(ops) for ops in by_seed])  # (seeds, clips, frames)
        truth = np.stack(openings["model"][1])
        noise = {"seeds": seeds, "by_seed": [mouth_error_split(x, truth) for x in stack],
                 "mean_over_seeds": mouth_error_split(stack.mean(0), truth),
                 "spread": float(stack.std(0, ddof=1).mean())}
    write_json(args.out, {"export": str(export), "protocol": proto, "reference": args.reference,
                          "summary": splits["model"], "floor": splits.get("floor"), "noise_seeds": noise,
                          "clips": per_clip})
    print(export)
    for name, s in splits.items():
        bands = "; ".join(f"true {lo:g}{f'-{hi:g}' if hi is not None else '+'}: {b['measured']:.3f} / "
                          f"{b['true']:.3f}" for b in s["by_opening"][1:] if b["frames"] for lo, hi in [b["band"]])
        gains = [g for g in s["clip_gain"] if np.isfinite(g)]
        gain_text = f"{np.mean(gains):.2f} ({min(gains):.2f}-{max(gains):.2f})" if gains else "n/a (no clip moves)"
        print(f"{name}: mouth err {s['mouth_err']:.4f}; measured = {s['gain']:.2f} x true {s['offset']:+.3f} "
              f"(corr {s['corr']:.3f}, {s['err_after_line']:.4f} left after the line); best lag {s['best_lag']} "
              f"frames; per-clip gain {gain_text}; measured / true opening, {bands}")
        print(f"{name}: error by frame:", " ".join(f"{e:.3f}" for e in s["err_by_frame"]))
    if noise is not None:
        print("by noise seed:", "; ".join(f"{seed}: err {sp['mouth_err']:.4f} gain {sp['gain']:.2f}"
                                          for seed, sp in zip(seeds, noise["by_seed"])))
        mean = noise["mean_over_seeds"]
        print(f"mean opening over the seeds: err {mean['mouth_err']:.4f} gain {mean['gain']:.2f} bias "
              f"{mean['bias']:+.4f}; per-frame spread across seeds {noise['spread']:.4f}")
    return 0


def reference_after(record, n: int) -> int:
    """The most open frame of ``record`` after its first ``n`` (its truth), or the most open of all if none."""
    opening = record.gt_mouth.numpy()[:, 0]
    later = opening[n:]
    return int(n + np.argmax(later)) if later.size else int(np.argmax(opening))


if __name__ == "__main__":
    sys.exit(main())
