"""Each run of a study at its own audio attention weight: choose the weight per run on the exploration clips.

A study scores every run with one sampler. When the runs differ in how strongly their audio path acts, one shared
audio attention weight can favour one arm of a comparison. This script scores the final export of every run of
every seed of a finished study (``experiments/demo/study.sh``) at each weight of a grid, on the exploration clips
(0-7 by default; it never reads a report clip unless told to), and applies a rule fixed before looking:

- per run, one weight for all its seeds: the lowest mean mouth error (correct audio) among the weights whose mean
  identity error is at most the run's identity at ``--base`` + ``--identity-slack`` and whose shuffled / correct
  ratio is at least ``--min-ratio`` (``--base`` always qualifies).

It prints the table, the chosen weights and the ``study.sh`` overrides that score each run at its weight on the
report clips. Scores are kept in ``--out`` as they come, so a killed run resumes. 2026-12-06 (eleventh session):
``experiments/demo/study_2026-12-06g/``.

    .venv/bin/python experiments/demo/audio_weight_per_run.py /work/runs/study11 --out /tmp/weights.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

KEYS = ("mouth_err_correct", "mouth_err_shuffled", "identity_err", "pose_err")


def choose(table: dict[str, dict[str, dict[str, float]]], base: str, slack: float, min_ratio: float) -> dict[str, str]:
    """run -> chosen weight, from run -> weight -> mean scores (the rule in the module docstring)."""
    out = {}
    for run, by_weight in table.items():
        bar = by_weight[base]["identity_err"] + slack
        ok = [w for w, m in by_weight.items() if w == base or (
            m["identity_err"] <= bar and m["mouth_err_shuffled"] / m["mouth_err_correct"] >= min_ratio)]
        out[run] = min(ok, key=lambda w: by_weight[w]["mouth_err_correct"])
    return out


def main(argv: list[str] | None = None) -> int:
    from hydra import compose, initialize_config_dir

    from vexpress.data.records import load_manifest
    from vexpress.demo.distill import heldout_records
    from vexpress.demo.evaluate import evaluate_export
    from vexpress.demo.prepare import ensure_data, foundation_vae
    from vexpress.demo.run import compose_train, train_overrides
    from vexpress.evaluation.synthetic import shuffled_audio_sources
    from vexpress.training.curriculum import EXPORT_DIR
    from vexpress.utils.io import write_json
    from vexpress.utils.paths import CONF_DIR

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", help="a finished study folder (seed_<s>/report.json with its runs' stage folders)")
    ap.add_argument("--weights", nargs="+", default=["1.0", "1.5", "2.0", "3.0"])
    ap.add_argument("--base", default="1.5", help="the weight the study used (one of --weights)")
    ap.add_argument("--identity-slack", type=float, default=0.0010)
    ap.add_argument("--min-ratio", type=float, default=2.0)
    ap.add_argument("--first-clip", type=int, default=0, help="first held-out clip (0-7 serve exploration)")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True, help="JSON of every score (read back on a rerun)")
    args = ap.parse_args(argv)
    if args.base not in args.weights:
        ap.error("--base must be one of --weights")
    torch.set_num_threads(args.threads)
    reports = sorted(Path(args.study).glob("seed_*/report.json"))
    if not reports:
        ap.error(f"no seed_*/report.json under {args.study}")
    root = Path.cwd()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("demo", overrides=[f"paths.root_dir={root}", "output_dir=/tmp/unused",
                                         f"eval.first_clip={args.first_clip}", f"eval.clips={args.clips}"])
        tcfg = compose_train(train_overrides(cfg, next(iter(cfg.runs))) + [f"paths.root_dir={root}"])
    held = load_manifest(ensure_data(tcfg.data), split=tcfg.data.val_split)
    records = heldout_records(held, cfg.eval, {})
    shuffled = shuffled_audio_sources(records, seed=int(cfg.eval.shuffle_seed))
    _, vae_info = foundation_vae(cfg.foundation)
    out = Path(args.out)
    scores = json.loads(out.read_text()) if out.is_file() else {}
    table: dict[str, dict[str, dict[str, float]]] = {}
    for w in args.weights:
        ecfg = cfg.eval.copy()
        ecfg.audio_attention_weight = float(w)
        for rep_path in reports:
            rep = json.loads(rep_path.read_text())
            for run, stages in rep["train"].items():
                key = f"{run}/seed_{rep['train_seed']}@{w}"
                if key not in scores:
                    export = Path(stages[-1]["stage_dir"]) / EXPORT_DIR
                    res = evaluate_export(export, key, records, shuffled, ecfg, out.parent / "evals" / key,
                                          include_gt=False, vae=vae_info["dir"])
                    scores[key] = {k: res[k] for k in KEYS}
                    write_json(out, scores)
                    print(key, json.dumps(scores[key]), flush=True)
                table.setdefault(run, {}).setdefault(w, []).append(scores[key])
    means = {run: {w: {k: statistics.mean(s[k] for s in rows) for k in KEYS} for w, rows in by_w.items()}
             for run, by_w in table.items()}
    chosen = choose(means, args.base, args.identity_slack, args.min_ratio)
    print(f"\n{len(reports)} seeds x {len(records)} clips from {args.first_clip}\n"
          "| run | weight | mouth err | shuffled | ratio | identity | pose (px) |\n|---|---|---|---|---|---|---|")
    for run, by_w in means.items():
        for w, m in by_w.items():
            mark = " (chosen)" if chosen[run] == w else ""
            print(f"| {run} | {w}{mark} | {m['mouth_err_correct']:.4f} | {m['mouth_err_shuffled']:.4f} | "
                  f"{m['mouth_err_shuffled'] / m['mouth_err_correct']:.2f} | {m['identity_err']:.4f} | "
                  f"{m['pose_err']:.3f} |")
    recipe_w = chosen.get("recipe", args.base)
    ov = [f"eval.audio_attention_weight={recipe_w}"] + [
        f"'+runs.{run}.eval={{audio_attention_weight:{w}}}'" for run, w in chosen.items() if w != recipe_w]
    print("\nchosen:", chosen, "\nstudy.sh overrides:", " ".join(ov))
    write_json(out, {**scores, "_chosen": chosen})
    return 0


if __name__ == "__main__":
    sys.exit(main())
