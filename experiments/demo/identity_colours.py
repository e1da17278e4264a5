"""Where a demo model's identity error comes from: the colours of its frames' regions against the reference's.

The report's identity error is the mean distance of each generated frame's region colours (background, hair, skin,
shirt; ``vexpress.synthetic.measure.appearance_descriptor``) to the truth's frame 0. This script generates the same
clips the same way (``vexpress.demo.evaluate.generate_clip``, the report's sampler settings) and splits that error
with ``vexpress.evaluation.synthetic.appearance_error_split``: a colour wrong for the whole clip against flicker
around it, the signed error per region, the error per position in the window, and any pull towards the clips'
average colour. The same split of the VAE's reconstructions of the truth (the latent model's floor) is printed
beside it.

Which clips it reads, and why the report's need ``--allow-report-clips``: ``_exploration.py``.

    .venv/bin/python experiments/demo/identity_colours.py --demo-output demo_output --run recipe --out colours.json
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from _exploration import add_model_arguments, open_model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(ap)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True, help="JSON file: the split for the model and for the VAE floor")
    args = ap.parse_args(argv)

    from vexpress.demo.evaluate import generate_clip, vae_roundtrip
    from vexpress.evaluation.synthetic import appearance_error_split
    from vexpress.synthetic.measure import APPEARANCE_REGIONS, appearance_descriptor, measure_clip, scale_pose
    from vexpress.utils.io import write_json

    torch.set_num_threads(args.threads)
    export, held, pipe, ecfg = open_model(ap, args)
    frames = int(ecfg.frames)
    fit = bool(ecfg.get("fit_pose", True))
    gen, vae, refs = [], [], []
    for rec in held:
        truth = rec.frames(range(min(frames, int(rec.num_frames))))
        refs.append(appearance_descriptor(truth[0], scale_pose(rec.gt_pose[0].numpy(), 1.0)))
        out = generate_clip(pipe, rec, rec, frames, ecfg)
        gen.append(measure_clip(out, rec, np.arange(len(out)), fit=fit)["appearance"])
        recon = vae_roundtrip(pipe.vae, truth)
        vae.append(measure_clip(recon, rec, np.arange(len(recon)), fit=fit)["appearance"])
    regions = list(APPEARANCE_REGIONS)
    result = {"export": str(export), "clips": [r.id for r in held],
              "model": appearance_error_split(np.stack(gen), np.stack(refs), regions),
              "vae_floor": appearance_error_split(np.stack(vae), np.stack(refs), regions)}
    write_json(args.out, result)
    for label in ("model", "vae_floor"):
        s = result[label]
        print(f"{label}: rms {s['rms']:.4f} = whole-clip colour {s['clip_rms']:.4f} (+) flicker "
              f"{s['frame_rms']:.4f}; pull towards the average colour {s['toward_mean']:+.2f}")
        for name, r in s["by_region"].items():
            rgb = " ".join(f"{v:+.4f}" for v in r["signed_mean_rgb"])
            print(f"  {name:<10} signed RGB {rgb}  whole-clip {r['clip_rms']:.4f}  flicker {r['frame_rms']:.4f}")
        print("  by frame:", " ".join(f"{e:.3f}" for e in s["rms_by_frame"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
