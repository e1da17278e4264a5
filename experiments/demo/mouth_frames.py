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
import sys

import numpy as np
import torch
from _exploration import add_model_arguments, open_model
from omegaconf import OmegaConf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(ap)
    ap.add_argument("--audio-attention-weight", type=float, help="override the report's sampler setting")
    ap.add_argument("--steps", type=int, help="override the report's number of sampling steps")
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
