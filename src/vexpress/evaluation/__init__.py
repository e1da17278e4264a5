"""The evaluation job: metrics over generated videos with a ground-truth row, reports, W&B, comparisons.

Python API (the CLI ``vexpress-eval`` is a thin Hydra shell over it; see ``docs/evaluation.md``)::

    from vexpress.evaluation import ClipPair, discover_pairs, evaluate_videos
    pairs, notes = discover_pairs("outputs/generated", "data/test_gt")
    res = evaluate_videos(pairs, {"lipsync": {}, "kps": {}, "syncnet": {"weights_path": "syncnet_v2.model"}},
                          run_name="stage3", output_dir="eval/stage3")
    res.write("eval/stage3")                      # per_clip.csv, eval_summary.json, eval_summary.md

    from vexpress.evaluation import evaluate_synthetic   # exact ground truth on the synthetic benchmark
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClipPair": "pairs", "discover_pairs": "pairs", "pairs_from_records": "pairs",
    "Video": "media",
    "evaluate_videos": "runner", "EvalResults": "runner", "GT_ROW": "report",
    "MetricSpec": "specs", "MetricUnavailable": "specs", "build_specs": "specs", "FIDSpec": "specs",
    "FVDSpec": "specs", "SyncNetSpec": "specs", "KpsDisSpec": "specs", "LMDSpec": "specs", "LipSyncSpec": "specs",
    "IdentitySpec": "specs", "SyntheticSpec": "specs",
    "write_results": "report", "log_wandb": "report", "write_comparison": "report", "comparison_rows": "report",
    "find_summaries": "report",
    "evaluate_synthetic": "synthetic", "SyntheticItem": "synthetic", "shuffled_audio_sources": "synthetic",
    "generate_for_records": "generate", "pipeline_generate_fn": "generate", "generate_fn_for_pipeline": "generate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vexpress.evaluation.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vexpress.evaluation' has no attribute {name!r}")
