"""Where a demo model's mouth error comes from: per-frame mouth opening against the synthetic truth.

The demo report gives one number per clip (mean |measured - true| opening). This script generates the same clips the
same way (``vexpress.demo.evaluate.generate_clip``, the report's sampler settings), keeps the per-frame openings and
splits the error with ``vexpress.evaluation.synthetic.mouth_error_split``: gain and offset of a least-squares line,
what the line leaves, the best whole-frame lag, the error per position in the generated window.

Exploration clips only (the first 8 held-out clips, as every choice of the demo): ``--allow-report-clips`` is for
reporting a finished choice, never for making one.

    .venv/bin/python experiments/demo/mouth_frames.py --demo-output demo_output --run recipe --out mouth.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

EXPLORATION_CLIPS = 8


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo-output", required=True, help="a vexpress-demo output_dir (its report.json and runs/)")
    ap.add_argument("--run", default="recipe", help="which run's final export (default: recipe)")
    ap.add_argument("--export", help="a stage export folder instead of the run's final one")
    ap.add_argument("--clips", type=int, default=EXPLORATION_CLIPS)
    ap.add_argument("--allow-report-clips", action="store_true")
    ap.add_argument("--audio-attention-weight", type=float, help="override the report's sampler setting")
    ap.add_argument("--steps", type=int, help="override the report's number of sampling steps")
    ap.add_argument("--out", required=True, help="JSON file: per-clip openings and the summary")
    args = ap.parse_args(argv)
    if args.clips > EXPLORATION_CLIPS and not args.allow_report_clips:
        ap.error(f"--clips {args.clips} reaches the report clips (only the first {EXPLORATION_CLIPS} serve "
                 "exploration); add --allow-report-clips to report a finished choice")

    from vexpress.data.records import load_manifest
    from vexpress.demo.distill import run_export
    from vexpress.demo.evaluate import export_pipeline, generate_clip
    from vexpress.evaluation.synthetic import mouth_error_split
    from vexpress.synthetic.measure import measure_clip
    from vexpress.utils.io import write_json

    torch.set_num_threads(1)
    demo = Path(args.demo_output)
    report = json.loads((demo / "report.json").read_text())
    proto = dict(report["protocol"])
    if args.audio_attention_weight is not None:
        proto["audio_attention_weight"] = args.audio_attention_weight
    if args.steps is not None:
        proto["num_inference_steps"] = args.steps
    frames = int(proto.get("frames") or 16)
    ecfg = OmegaConf.create({**proto, "frames": frames})
    export = Path(args.export) if args.export else run_export(demo, report, args.run)
    held = load_manifest(report["data"]["root"], split="heldout")[: args.clips]  # clips from 0: exploration first
    pipe = export_pipeline(export, ecfg, (report.get("vae") or {}).get("dir"))  # decoded as the report decodes
    per_clip, ops, gts = {}, [], []
    for rec in held:
        out = generate_clip(pipe, rec, rec, frames, ecfg)
        m = measure_clip(out, rec, np.arange(len(out)), fit=bool(ecfg.get("fit_pose", True)))
        op, gt = m["mouth"][:, 0].astype(float), m["gt_mouth"][:, 0].astype(float)
        per_clip[rec.id] = {"measured": op.round(4).tolist(), "true": gt.round(4).tolist()}
        ops.append(op)
        gts.append(gt)
    summary = mouth_error_split(np.stack(ops), np.stack(gts))
    write_json(args.out, {"export": str(export), "protocol": proto, "summary": summary, "clips": per_clip})
    print(f"{export}: mouth err {summary['mouth_err']:.4f}; measured = {summary['gain']:.2f} x true "
          f"{summary['offset']:+.3f} (corr {summary['corr']:.3f}, {summary['err_after_line']:.4f} left after the "
          f"line); best lag {summary['best_lag']} frames")
    print("error by frame:", " ".join(f"{e:.3f}" for e in summary["err_by_frame"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
