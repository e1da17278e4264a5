"""``vexpress-eval``: metrics over generated videos, with a ground-truth row computed by the same code.

    vexpress-eval generated_dir=out/videos gt_dir=data/test_gt
    vexpress-eval run=logs/train/runs/X/export manifest=data/test split=test [shuffled_audio=true]
    vexpress-eval -m run=exp/stage1/export,exp/stage2/export manifest=data/test     # + comparison table

Writes ``per_clip.csv``, ``eval_summary.json`` and ``eval_summary.md`` into the run folder, logs them to W&B
(offline by default), and after a multirun ``comparison.{md,csv,json}`` into the sweep folder. See
``docs/evaluation.md``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Dict, List

from vexpress.cli._common import hydra_main, stops_cleanly, user_errors
from vexpress.errors import InputError

log = logging.getLogger("vexpress.eval")


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _run_name(cfg) -> str:
    if cfg.name:
        return str(cfg.name)
    if cfg.run:
        p = Path(str(cfg.run))
        parts = [x for x in (p.parent.name, p.name) if x]
        name = "/".join(parts[-2:]) if p.name in ("export", "final", "last") else p.name
    elif cfg.generated_dir:
        name = Path(str(cfg.generated_dir)).name
    else:
        name = "model"
    return re.sub(r"\s+", "_", name) or "model"


def _records(cfg) -> List[Any]:
    from vexpress.data.records import load_manifest

    root = Path(str(cfg.manifest)).expanduser()
    if not (root / "manifest.json").is_file():
        raise InputError(f"manifest={root} has no manifest.json; give a preprocessed dataset folder "
                         "(vexpress-preprocess or vexpress-synth output)")
    split = _plain(cfg.split)
    records = load_manifest(root, split=split)
    if not records:
        raise InputError(f"manifest {root} has no clips in split {split!r}; check split=")
    if cfg.max_clips:
        records = records[: int(cfg.max_clips)]
    return records


def _generate_fn(cfg):
    from vexpress.evaluation.generate import pipeline_generate_fn

    if str(cfg.run) == "tiny":
        log.warning("run=tiny: a randomly initialised tiny model (smoke test); its videos are noise")
    return pipeline_generate_fn(str(cfg.run), _plain(cfg.generation.pipeline) or {},
                                _plain(cfg.generation.options) or {})


def _generation_key(cfg, records) -> str:
    from vexpress.evaluation.media import short_hash

    run = Path(str(cfg.run)).expanduser()
    stamp = None
    if run.exists():
        stamp = max((p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()), default=run.stat().st_mtime_ns)
    return short_hash({"run": str(run.resolve()) if run.exists() else str(cfg.run), "stamp": stamp,
                       "generation": _plain(cfg.generation), "clips": [r.id for r in records],
                       "shuffle_seed": int(cfg.shuffle_seed)})


def build_pairs(cfg) -> tuple:
    """(pairs, notes, inputs description) for the configured input mode."""
    from vexpress.evaluation.pairs import discover_pairs, pairs_from_records

    notes: List[str] = []
    if cfg.run:
        if not cfg.manifest:
            raise InputError("run= needs manifest= (the test clips to generate and score)")
        from vexpress.evaluation.generate import generate_for_records
        from vexpress.evaluation.synthetic import shuffled_audio_sources

        records = _records(cfg)
        gen_root = Path(str(cfg.cache_dir)) / "generated" / _generation_key(cfg, records)
        generate_fn = _generate_fn(cfg)
        gen = generate_for_records(records, gen_root, generate_fn, progress=log.info)
        pairs = pairs_from_records(records, gen)
        if cfg.shuffled_audio:
            sources = shuffled_audio_sources(records, int(cfg.shuffle_seed))
            gen_s = generate_for_records(records, gen_root, generate_fn, audio_sources=sources, condition="shuffled",
                                         progress=log.info)
            pairs += pairs_from_records(records, gen_s, sources, condition="shuffled")
        inputs = {"run": str(cfg.run), "manifest": str(cfg.manifest), "split": _plain(cfg.split),
                  "generated": str(gen_root), "shuffled_audio": bool(cfg.shuffled_audio)}
        return pairs, notes, inputs
    if cfg.manifest:
        records = _records(cfg)
        generated = {}
        if cfg.generated_dir:
            gdir = Path(str(cfg.generated_dir)).expanduser()
            if not gdir.is_dir():
                raise InputError(f"generated_dir {gdir} is not a folder; give the folder that holds <clip id>.mp4")
            for rec in records:
                hits = sorted(gdir.glob(f"{rec.id}.*"))
                if hits:
                    generated[rec.id] = hits[0]
                else:
                    notes.append(f"clip {rec.id}: no generated video in {gdir}")
            if not generated:
                raise InputError(f"no generated video in {gdir} matches a clip id of the manifest split")
        pairs = pairs_from_records(records, generated)
        return pairs, notes, {"manifest": str(cfg.manifest), "split": _plain(cfg.split),
                              "generated_dir": str(cfg.generated_dir) if cfg.generated_dir else None}
    pairs, notes = discover_pairs(cfg.generated_dir, cfg.gt_dir)
    if cfg.max_clips:
        pairs = pairs[: int(cfg.max_clips)]
    return pairs, notes, {"generated_dir": cfg.generated_dir, "gt_dir": cfg.gt_dir}


@user_errors
@stops_cleanly
def run(cfg) -> Dict[str, Any]:
    from vexpress.evaluation.report import GT_ROW, log_wandb, markdown_table
    from vexpress.evaluation.runner import evaluate_videos
    from vexpress.utils.io import check_writable

    output_dir = Path(str(cfg.output_dir))
    check_writable(output_dir / "eval_summary.json", "evaluation summary")
    if not (cfg.generated_dir or cfg.gt_dir or cfg.run or cfg.manifest):
        raise InputError("nothing to evaluate: give generated_dir= (and gt_dir=), or run= and manifest=")
    pairs, notes, inputs = build_pairs(cfg)
    name = _run_name(cfg)
    metrics = _plain(cfg.metrics) or {}
    res = evaluate_videos(pairs, metrics, run_name=name, output_dir=output_dir, cache_dir=str(cfg.cache_dir),
                          include_gt=bool(cfg.include_gt), resume=bool(cfg.resume), inputs=inputs, notes=notes,
                          progress=log.info)
    paths = res.write(output_dir)
    if cfg.wandb.enabled:
        try:
            log_wandb(res, project=str(cfg.wandb.project), mode=str(cfg.wandb.mode), save_dir=output_dir,
                      group=cfg.wandb.group, tags=_plain(cfg.wandb.tags), config=_plain(cfg))
        except ModuleNotFoundError as err:
            log.warning("%s", err)
    order = [name] + [k for k in res.summary if k not in (name, GT_ROW)] + [GT_ROW]
    print(markdown_table(res.summary, res.columns, order))
    for k, v in res.skipped.items():
        print(f"skipped {k}: {v}")
    for u in res.unscored:
        print(f"not scored: {u['clip_id']} ({u['row']}): {u['reason']}")
    if res.meta.get("generated_videos"):
        print(f"scored {res.scored()} of {res.meta['generated_videos']} generated videos")
    print(f"wrote {paths['markdown']}, {paths['json']}, {paths['csv']}")
    return res.to_dict()


def main() -> None:
    hydra_main("eval", run, "vexpress-eval")  # one-line config errors, --help of its own groups


if __name__ == "__main__":
    main()
