"""Two studies of the demo (two settings, the same seeds and report clips): new minus old, paired by seed and clip.

For every run and metric, the mean per-clip difference with a 95 % crossed bootstrap interval over seeds and clips
(``vexpress.evaluation.study``'s resampling, 10,000 draws, RNG seed 0), as the study itself compares the recipe with
its ablations. This is how a change of the demo's settings is judged on the report clips once it was chosen on the
exploration clips. Two exploration candidates (``explore.py``, the same layout) pair the same way.

A study that kept only its summary (``study.json``, no ``seed_<s>/report.json``) pairs by seed only: each run's
per-seed means, new minus old, with a bootstrap over the seeds (the same resampling with one cell per seed), for
the four metrics and the shuffled / correct ratio. Five seeds make that interval crude; it says less than a pairing
by clip.

    .venv/bin/python experiments/demo/compare_studies.py <old study dir> <new study dir>
    .venv/bin/python experiments/demo/compare_studies.py demo_output/explore/<base> demo_output/explore/<candidate>
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

FIELDS = ("mouth_err_correct", "mouth_err_shuffled", "identity_err", "pose_err")


def seeds_of(study: Path) -> dict[int, dict]:
    return {int(p.parent.name.split("_")[1]): json.loads(p.read_text())
            for p in sorted(study.glob("seed_*/report.json"))}


def per_seed_of(study: Path) -> tuple[list[int], dict[str, dict[str, list[float]]]]:
    """``(seeds, {run: {metric: per-seed means}})`` from a study's ``study.json`` (metrics: FIELDS and ``ratio``)."""
    from vexpress.errors import InputError

    path = study / "study.json"
    if not path.is_file():
        raise InputError(f"{study} has neither seed_<s>/report.json nor study.json; give a study's output folder")
    summary = json.loads(path.read_text())
    runs = {}
    for run, entry in summary["runs"].items():
        runs[run] = {f: entry["metrics"][f]["per_seed"] for f in FIELDS}
        runs[run]["ratio"] = entry["ratio"]["per_seed"]
    return [int(s) for s in summary["seeds"]], runs


def compare_by_seed(old: Path, new: Path) -> None:
    """Print new minus old per run and metric, paired by seed only (see the module's docstring)."""
    from vexpress.errors import InputError
    from vexpress.evaluation.study import bootstrap_interval

    (old_seeds, a), (new_seeds, b) = per_seed_of(old), per_seed_of(new)
    seeds = sorted(set(old_seeds) & set(new_seeds))
    if not seeds:
        raise InputError(f"{old} and {new} share no seed; run both studies with the same seeds")
    print(f"seeds {seeds}; new minus old, paired by seed only (per-seed means from study.json); 95 % bootstrap "
          f"over seeds")
    for run in [r for r in a if r in b]:
        for field in (*FIELDS, "ratio"):
            before = np.array([a[run][field][old_seeds.index(s)] for s in seeds])
            after = np.array([b[run][field][new_seeds.index(s)] for s in seeds])
            d = (after - before)[:, None]
            mean, lo, hi = bootstrap_interval(d)
            lower = int((d[:, 0] < 0).sum())
            print(f"{run:24s} {field:20s} old {before.mean():.4f} new {after.mean():.4f} diff {mean:+.4f} "
                  f"[{lo:+.4f}, {hi:+.4f}] ({100 * mean / before.mean():+.1f} %), negative in {lower} of "
                  f"{len(seeds)} seeds: " + " ".join(f"{s}: {x:+.4f}" for s, x in zip(seeds, d[:, 0])))


def main(argv: list[str] | None = None) -> int:
    from vexpress.errors import InputError
    from vexpress.evaluation.study import bootstrap_interval, crossed_bootstrap_weights

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--by-seed", action="store_true",
                    help="also each seed's mean difference (%% of its old mean) and how far the seeds' means scatter "
                    "(their standard error) next to the clips' (the mean over seeds of each seed's clip standard "
                    "error divided by the square root of the number of seeds): where an interval's width comes from")
    args = ap.parse_args(argv)
    old, new = seeds_of(args.old), seeds_of(args.new)
    if not old or not new:
        compare_by_seed(args.old, args.new)
        return 0
    seeds = sorted(set(old) & set(new))
    if not seeds:
        raise InputError(f"{args.old} and {args.new} share no seed_<s>/report.json; run both studies first")
    runs = [r for r in old[seeds[0]]["evaluation"] if r in new[seeds[0]]["evaluation"]]
    print(f"seeds {seeds}; new minus old, paired by seed and clip; 95 % crossed bootstrap")
    weights = None
    for run in runs:
        for field in FIELDS:
            diffs, before, after = [], [], []
            for s in seeds:
                a = old[s]["evaluation"][run]["per_clip"]
                b = new[s]["evaluation"][run]["per_clip"]
                if sorted(a) != sorted(b):
                    raise InputError(f"seed {s}, run {run}: the two studies scored different clips")
                clips = sorted(a)
                diffs.append([b[c][field] - a[c][field] for c in clips])
                before.append([a[c][field] for c in clips])
                after.append([b[c][field] for c in clips])
            d = np.asarray(diffs)
            if weights is None:
                weights = crossed_bootstrap_weights(*d.shape)
            mean, lo, hi = bootstrap_interval(d, weights=weights)
            print(f"{run:24s} {field:20s} old {np.mean(before):.4f} new {np.mean(after):.4f} diff {mean:+.4f} "
                  f"[{lo:+.4f}, {hi:+.4f}] ({100 * mean / np.mean(before):+.1f} %)")
            if args.by_seed:
                per_seed = d.mean(axis=1)
                rel = 100 * per_seed / np.asarray(before).mean(axis=1)
                seed_se = per_seed.std(ddof=1) / np.sqrt(len(seeds)) if len(seeds) > 1 else float("nan")
                clip_se = np.mean(d.std(axis=1, ddof=1) / np.sqrt(d.shape[1])) / np.sqrt(len(seeds))
                print(f"{'':24s} {'':20s} by seed: " + " ".join(f"{s}: {r:+.1f} %" for s, r in zip(seeds, rel))
                      + f"; s.e. from the seeds {seed_se:.4f}, from the clips {clip_se:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
