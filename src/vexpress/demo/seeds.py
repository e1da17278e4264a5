"""Several ``make demo`` runs that differ only in the training seed, summarised in one table.

One demo run is a single seed, and at a few hundred CPU steps from scratch the differences between the recipe and
its ablations change from seed to seed (experiments/demo/results.md). This module reads the ``report.json`` of
several runs and writes, per run and metric, the mean and standard deviation over seeds, how many seeds met the
audio goal, and the recipe-minus-ablation mouth differences seed by seed::

    experiments/demo/seeds.sh 7 8 9                      # runs the demos, then this
    python -m vexpress.demo.seeds OUT/seed_7/report.json OUT/seed_8/report.json --out OUT
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

METRICS = ("mouth_err_correct", "mouth_err_shuffled", "ratio", "identity_err", "pose_err")


def _stats(values: Sequence[float]) -> dict[str, Any]:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    n = len(v)
    mean = sum(v) / n if n else float("nan")
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else float("nan")
    return {"mean": mean, "sd": sd, "n": n, "values": v}


def aggregate(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean / sd over the reports (one per seed) of every run's held-out metrics, and the seed-by-seed paired
    recipe-minus-ablation mouth error."""
    if not reports:
        raise ValueError("no demo reports to aggregate")
    seeds = [r.get("train_seed") for r in reports]
    labels = [lab for lab in reports[0]["evaluation"] if all(lab in r["evaluation"] for r in reports)]
    runs = {lab: {m: _stats([r["evaluation"][lab].get(m) for r in reports]) for m in METRICS} for lab in labels}
    paired: dict[str, Any] = {}
    for ab in {k for r in reports for k in (r.get("paired") or {})}:
        per_seed = [((r.get("paired") or {}).get(ab) or {}).get("mouth_err_correct", {}).get("mean") for r in reports]
        paired[ab] = _stats([x for x in per_seed if x is not None])
    goal_met = [bool((r.get("goals") or {}).get("all_met")) for r in reports]
    uses_audio = [bool((r.get("goals") or {}).get("recipe_uses_audio")) for r in reports]
    return {"format": "vexpress-demo-seeds", "version": 1, "seeds": seeds, "runs": runs,
            "paired_mouth_err_correct": paired, "recipe_uses_audio": uses_audio, "all_goals_met": goal_met,
            "protocol": reports[0].get("protocol")}


def _pm(s: Mapping[str, Any], digits: int = 3) -> str:
    if not s or not s.get("n"):
        return "n/a"
    sd = "" if not math.isfinite(s["sd"]) else f" +- {s['sd']:.{digits}f}"
    return f"{s['mean']:.{digits}f}{sd}"


def to_markdown(agg: Mapping[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in agg["seeds"])
    lines = ["# vexpress demo over training seeds", "",
             f"Seeds: {seeds}. Mean +- standard deviation over seeds (each seed: held-out clips, protocol as in every "
             "report).", "",
             "| run | mouth err (correct) | mouth err (shuffled) | shuffled / correct | identity err | pose err (px) |",
             "|---|---|---|---|---|---|"]
    for lab, st in agg["runs"].items():
        lines.append(f"| {lab} | {_pm(st['mouth_err_correct'])} | {_pm(st['mouth_err_shuffled'])} | "
                     f"{_pm(st['ratio'], 2)} | {_pm(st['identity_err'])} | {_pm(st['pose_err'], 2)} |")
    if agg["paired_mouth_err_correct"]:
        lines += ["", "Recipe minus ablation, mouth error with the correct audio (paired over clips within a seed), "
                      "over seeds:", ""]
        for ab, st in sorted(agg["paired_mouth_err_correct"].items()):
            vals = ", ".join(f"{v:+.3f}" for v in st["values"])
            lines.append(f"- {ab}: {_pm(st)} (per seed: {vals})")
    n = len(agg["seeds"])
    lines += ["", f"Recipe ratio >= goal in {sum(agg['recipe_uses_audio'])} of {n} seeds; all goals met in "
                  f"{sum(agg['all_goals_met'])} of {n}.", ""]
    return "\n".join(lines)


def write(out_dir: Path, agg: Mapping[str, Any]) -> None:
    from vexpress.utils.io import atomic_open, write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "seeds.json", agg)
    with atomic_open(out_dir / "seeds.md", "w") as fh:
        fh.write(to_markdown(agg))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Summarise several vexpress-demo reports (one per training seed).")
    ap.add_argument("reports", nargs="+", type=Path, help="report.json files of vexpress-demo runs")
    ap.add_argument("--out", type=Path, required=True, help="folder for seeds.md and seeds.json")
    args = ap.parse_args(argv)
    reports = []
    for path in args.reports:
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            print(f"error: cannot read demo report {path} ({err}); give report.json files of finished vexpress-demo "
                  "runs", file=sys.stderr, flush=True)
            return 2
    agg = aggregate(reports)
    write(args.out, agg)
    print(to_markdown(agg))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
