"""What the demo's diagnostic scripts share: which held-out clips serve exploration, and a trained demo model
opened as its report sampled it.

Every choice of the demo is made on the first held-out clips (``conf/demo.yaml``: the report starts at
``eval.first_clip``); the rest are the report's. A script reads more only with ``--allow-report-clips``, to report a
finished choice, never to make one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

#: the held-out clips before the report's first one serve exploration (the owner: conf/demo.yaml eval.first_clip)
EXPLORATION_CLIPS = int(OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "demo.yaml").eval.first_clip)


def add_model_arguments(ap: argparse.ArgumentParser) -> None:
    """The options that name a trained demo model and the clips to read."""
    ap.add_argument("--demo-output", required=True, help="a vexpress-demo output_dir (its report.json and runs/)")
    ap.add_argument("--run", default="recipe", help="which run's final export (default: recipe)")
    ap.add_argument("--export", help="a stage export folder instead of the run's final one")
    ap.add_argument("--clips", type=int, help="the first N clips the report scored (default: every exploration clip)")
    ap.add_argument("--allow-report-clips", action="store_true")


def open_model(ap: argparse.ArgumentParser, args: argparse.Namespace,
               protocol: dict[str, Any] | None = None) -> tuple[Path, list[Any], Any, Any]:
    """``(export, held-out records, pipeline, sampler settings)`` for ``add_model_arguments``' options: the report's
    sampler settings (``protocol`` overrides some) and decoder, the first ``--clips`` held-out clips of the set the
    report scored (an exploration set of its own: all of them by default; the training data's: the first
    ``EXPLORATION_CLIPS``, more only with ``--allow-report-clips``)."""
    from vexpress.data.records import load_manifest
    from vexpress.demo.distill import run_export
    from vexpress.demo.evaluate import export_pipeline

    demo = Path(args.demo_output)
    report = json.loads((demo / "report.json").read_text())
    root = report["data"].get("eval_root") or report["data"]["root"]
    own_set = root != report["data"]["root"]
    limit = args.clips if args.clips is not None else (None if own_set else EXPLORATION_CLIPS)
    if limit is not None and limit > EXPLORATION_CLIPS and not own_set and not args.allow_report_clips:
        ap.error(f"--clips {limit} reaches the report clips (only the first {EXPLORATION_CLIPS} serve "
                 "exploration); add --allow-report-clips to report a finished choice")
    proto = {**report["protocol"], **(protocol or {})}
    ecfg = OmegaConf.create({**proto, "frames": int(proto.get("frames") or 16)})
    export = Path(args.export) if args.export else run_export(demo, report, args.run)
    held = load_manifest(root, split="heldout")[:limit]  # clips from 0: exploration first
    pipe = export_pipeline(export, ecfg, (report.get("vae") or {}).get("dir"))  # decoded as the report decodes
    return export, held, pipe, ecfg
