"""Does a demo model fail to learn the mouth, or fail to carry it to new faces and voices? Its own training clips
against the exploration clips.

The report scores held-out identities only. This script generates, the report's way (its sampler settings, decoder
and scoring, ``vexpress.demo.evaluate.evaluate_pipeline``), the first clip of each of the first ``--clips``
*training* identities (clips the model was trained on, with their own speech) and the exploration clips, each with
its own and with a shuffled partner's audio, and prints both rows with their VAE floor (the same clips' truth through
the VAE, scored the same way: ``evaluate_vae_floor``, the report's floor). An error as high on the training clips as on the held-out ones, relative to its
floor, is underfitting: more of the same data would not help, more learning would. No report clip (8-31) is read.

    .venv/bin/python experiments/demo/fit_gap.py --demo-output <vexpress-demo output_dir> --out fit_gap/
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from _exploration import add_model_arguments, open_model

FIGURES = ("mouth_err_correct", "mouth_err_shuffled", "ratio", "identity_err", "pose_err")


def first_clip_per_identity(records, n: int) -> list:
    """The first clip of each of the first ``n`` identities, in manifest order."""
    seen, picked = set(), []
    for rec in records:
        if rec.identity not in seen:
            seen.add(rec.identity)
            picked.append(rec)
        if len(picked) == n:
            break
    return picked


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(ap)
    ap.add_argument("--out", required=True, help="folder for the per-clip tables (train/, heldout/) and fit_gap.json")
    args = ap.parse_args(argv)

    from vexpress.data.records import load_manifest
    from vexpress.demo.evaluate import evaluate_pipeline, evaluate_vae_floor
    from vexpress.evaluation.synthetic import shuffled_audio_sources
    from vexpress.utils.io import write_json

    torch.set_num_threads(1)
    export, held, pipe, ecfg = open_model(ap, args)
    report = json.loads((Path(args.demo_output) / "report.json").read_text())
    train = first_clip_per_identity(load_manifest(report["data"]["root"], split="train"), len(held))
    out = Path(args.out)
    rows = {}
    for split, records in (("train", train), ("heldout", held)):
        shuffled = shuffled_audio_sources(records, seed=int(ecfg.shuffle_seed))
        r = evaluate_pipeline(pipe, split, records, shuffled, ecfg, out / split, include_gt=False)
        floor = evaluate_vae_floor(pipe.vae, records, ecfg)
        rows[split] = {**{k: r[k] for k in FIGURES}, "clips": r["clips"],
                       "floor": {"mouth_err": floor["mouth_err"], "identity_err": floor["identity_err"]},
                       "mouth_over_floor": r["mouth_err_correct"] / floor["mouth_err"],
                       "identity_over_floor": r["identity_err"] / floor["identity_err"]}
    result = {"export": str(export), **rows}
    write_json(out / "fit_gap.json", result)
    for split, row in rows.items():
        print(f"{split:8s} mouth {row['mouth_err_correct']:.4f} ({row['mouth_over_floor']:.2f}x its floor "
              f"{row['floor']['mouth_err']:.4f})  ratio {row['ratio']:.2f}  identity {row['identity_err']:.4f} "
              f"({row['identity_over_floor']:.2f}x)  pose {row['pose_err']:.3f} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
