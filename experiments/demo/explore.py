"""One exploration candidate: make demo's recipe alone, once per training seed, scored on the exploration clips.

The demo's settings are chosen on exploration clips, by a rule written before the candidates' figures
(``exploration_*_rules.md``); the study then measures a choice on the report clips. The exploration clips are
``conf/demo.yaml`` ``exploration``: the held-out split of a synthetic set of its own (32 clips of 16 identities that
neither training nor the report uses); ``--old-clips`` scores the exploration clips used until 2026-12-07f instead,
the training data's first 8 held-out clips (``_exploration``). This runs a candidate the way every such rule has been
scored: the recipe run only (the ablations are left out), one process per seed with one thread, no sample video, each
seed in ``<dir>/<tag>/seed_<s>/`` (the study's layout), so that ``compare_studies.py`` pairs two candidates by seed
and clip with bootstrap intervals:

    .venv/bin/python experiments/demo/explore.py base --seeds 7 8 9 --jobs 2
    .venv/bin/python experiments/demo/explore.py m850 --seeds 7 8 9 --jobs 2 --from base \\
        --train curriculum.stage_overrides.audio_motion.max_steps=850
    .venv/bin/python experiments/demo/explore.py base_ref1.0 --from base -- eval.reference_attention_weight=1.0
    .venv/bin/python experiments/demo/compare_studies.py demo_output/explore/base demo_output/explore/m850

``--from`` copies another candidate's trained runs first: a stage whose key matches is reused (the key is the
stage's effective training config and what it starts from, ``docs/training.md`` *Resume*), so a candidate that only
changes the evaluation trains nothing and one that changes a later stage trains from that stage on. A seed whose
report exists is skipped (a killed exploration resumes; stopping this script stops its seeds' processes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _exploration import EXPLORATION_CLIPS
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]


def exploration_clips(old_clips: bool = False) -> list[str]:
    """The vexpress-demo overrides that score the exploration clips: ``conf/demo.yaml`` ``exploration`` (a held-out
    set of its own), or with ``old_clips`` the training data's first held-out clips (the exploration clips until
    2026-12-07f, which earlier records were scored on)."""
    if old_clips:
        return ["eval.first_clip=0", f"eval.clips={EXPLORATION_CLIPS}", "eval.heldout_data=null"]
    ex = OmegaConf.load(ROOT / "conf" / "demo.yaml").exploration
    fields = ",".join(f"{k}:{v}" for k, v in OmegaConf.to_container(ex.heldout_data).items())
    return ["eval.first_clip=0", f"eval.clips={int(ex.clips)}", f"eval.heldout_data={{{fields}}}"]


def demo_command(out: Path, seed: int, train: list[str], overrides: list[str], old_clips: bool = False) -> list[str]:
    """The vexpress-demo call for one seed: the recipe run alone, on the exploration clips."""
    runs = OmegaConf.load(ROOT / "conf" / "demo.yaml").runs
    others = [f"~runs.{name}" for name, run in runs.items() if run.role != "recipe"]
    train_list = ",".join(json.dumps(x) for x in [f"seed={seed}", *train])  # each a quoted Hydra string
    return [str(ROOT / ".venv" / "bin" / "vexpress-demo"), f"output_dir={out}", f"train_overrides=[{train_list}]",
            *exploration_clips(old_clips), "sample_video.enabled=false", "workers=1", "threads=1", *others,
            *overrides]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tag", help="the candidate's name (its folder under --dir)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    ap.add_argument("--from", dest="source", help="a candidate whose trained runs are copied first (same --dir)")
    ap.add_argument("--train", action="append", default=[], metavar="OVERRIDE",
                    help="a vexpress-train override for the recipe, e.g. curriculum.stage_overrides.joint.lr=1e-4")
    ap.add_argument("--old-clips", action="store_true",
                    help="score the training data's first held-out clips (the exploration clips until 2026-12-07f) "
                    "instead of conf/demo.yaml's exploration set")
    ap.add_argument("--jobs", type=int, default=1, help="seeds at once (one process and one thread each)")
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("VEXPRESS_EXPLORE_DIR",
                                                                    ROOT / "demo_output" / "explore")))
    ap.epilog = "vexpress-demo overrides follow a --, e.g. -- eval.audio_attention_weight=2.5"
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args, overrides = ap.parse_args(argv[:cut]), argv[cut + 1:]
    if args.source and not (args.dir / args.source).is_dir():
        ap.error(f"--from {args.source}: no candidate at {args.dir / args.source}; run it first")
    todo = []
    for seed in args.seeds:
        out = args.dir / args.tag / f"seed_{seed}"
        if (out / "report.json").exists():
            print(f"[explore] {args.tag} seed {seed}: report exists, skipped")
            continue
        src = args.dir / args.source / f"seed_{seed}" / "runs" if args.source else None
        if src is not None and src.is_dir() and not (out / "runs").exists():
            shutil.copytree(src, out / "runs", ignore=shutil.ignore_patterns("*.ckpt"))
        out.mkdir(parents=True, exist_ok=True)
        todo.append((seed, out))
    running: list[tuple[int, subprocess.Popen, float]] = []
    failed = []
    try:
        while todo or running:
            while todo and len(running) < max(1, args.jobs):
                seed, out = todo.pop(0)
                with open(out.parent / f"seed_{seed}.log", "w") as log:
                    proc = subprocess.Popen(demo_command(out, seed, args.train, overrides, args.old_clips), cwd=ROOT,
                                            stdout=log, stderr=subprocess.STDOUT)
                running.append((seed, proc, time.time()))
            time.sleep(1.0)
            for item in [r for r in running if r[1].poll() is not None]:
                seed, proc, start = item
                running.remove(item)
                print(f"[explore] {args.tag} seed {seed}: exit {proc.returncode} after {time.time() - start:.0f} s "
                      f"(log {args.dir / args.tag / f'seed_{seed}.log'})")
                if proc.returncode != 0:
                    failed.append(seed)
    finally:
        for _, proc, _ in running:
            proc.terminate()
        for _, proc, _ in running:
            proc.wait()
    if failed:
        print(f"[explore] {args.tag}: seeds {failed} failed; see their logs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
