"""``vexpress-train``: run a training curriculum (one or more stages), each stage in its own ``trainer.fit``.

    vexpress-train experiment=smoke
    vexpress-train curriculum=vexpress dropout=paper trainer=gpu
    vexpress-train curriculum=single stage=joint stage.init_from=/path/to/export
    vexpress-train -m dropout=none,paper

For every stage of ``curriculum.stages`` the config is composed again with ``stage=<name>`` (plus the command-line
overrides), so everything that interpolates ``${stage.*}`` (frames and batch size of the data, the learning rate,
``max_steps``) follows the stage; the curriculum's ``stage_overrides`` for that stage are merged on top, and a
chained stage gets ``stage.init_from`` = the previous stage's export. A fresh Trainer is built per stage.

Re-running with the same output folder (``hydra.run.dir=...``) resumes: finished stages (``export/DONE``) are skipped,
an unfinished one continues from its ``checkpoints/last.ckpt`` (loaded with ``weights_only=True``).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from vexpress.cli._common import config_path, user_errors

log = logging.getLogger("vexpress.train")


def _instantiate_group(node: Any) -> list:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (callbacks, logger); skip nulls."""
    from hydra.utils import instantiate
    from omegaconf import DictConfig

    out = []
    if not node:
        return out
    for _, conf in node.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            out.append(instantiate(conf))
    return out


def _task_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []


def compose_stage_config(overrides: Sequence[str], stage_name: str):
    """The full config with ``stage=<stage_name>`` (the command-line ``stage=`` choice is replaced)."""
    from hydra import compose

    kept = [o for o in overrides if not o.lstrip("+~").split("=", 1)[0] == "stage"]
    return compose(config_name="train", overrides=kept + [f"stage={stage_name}"])


def stage_config(cfg, curriculum, index: int, overrides: Sequence[str],
                 compose_fn: Callable[[Sequence[str], str], Any] | None = None):
    """The config of stage ``index`` of ``curriculum`` (see the module docstring)."""
    from omegaconf import OmegaConf

    name = curriculum.stages[index]
    if cfg.stage.name == name:
        scfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    else:
        scfg = (compose_fn or compose_stage_config)(overrides, name)
        scfg = OmegaConf.create(OmegaConf.to_container(scfg, resolve=False))
    OmegaConf.set_struct(scfg, False)
    scfg.stage_index = index
    delta = curriculum.stage_overrides.get(name)
    if delta:
        scfg.stage = OmegaConf.merge(scfg.stage, OmegaConf.create(OmegaConf.to_container(delta) if not isinstance(
            delta, dict) else delta))
    root = scfg.paths.output_dir
    scfg.stage.init_from = curriculum.init_source(root, index, scfg.stage.get("init_from"))
    return scfg


def _resume_checkpoint(cfg) -> str | None:
    if not cfg.get("resume", True):
        return None
    path = Path(cfg.stage_dir) / "checkpoints" / "last.ckpt"
    return str(path) if path.exists() else None


def _finish_wandb() -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def train_stage(cfg) -> dict[str, Any]:
    """One ``trainer.fit`` for the stage in ``cfg``; returns a summary (export folder, steps, probe history)."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = _instantiate_group(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers if loggers else False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    ckpt = _resume_checkpoint(cfg)
    if ckpt:
        log.info("resuming stage %s from %s", cfg.stage.name, ckpt)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    finally:
        _finish_wandb()
    probe = next((cb for cb in callbacks if hasattr(cb, "history")), None)
    export = next((cb for cb in callbacks if hasattr(cb, "exported")), None)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    return {
        "stage": cfg.stage.name,
        "index": int(cfg.stage_index),
        "global_step": int(trainer.global_step),
        "export": str(export.exported) if export is not None and export.exported else None,
        "probe": probe.history if probe is not None else [],
        "metrics": metrics,
        "trainer": trainer,
        "model": model,
    }


def run_curriculum(cfg, overrides: Sequence[str] | None = None,
                   compose_fn: Callable[[Sequence[str], str], Any] | None = None) -> list[dict[str, Any]]:
    """Run every stage of ``cfg.curriculum`` in order (skipping finished ones when ``cfg.resume``)."""
    from hydra.utils import instantiate

    overrides = list(overrides) if overrides is not None else _task_overrides()
    curriculum = instantiate(cfg.curriculum, _convert_="all")
    root = Path(cfg.paths.output_dir)
    results = []
    for index, name in enumerate(curriculum.stages):
        if cfg.get("resume", True) and curriculum.is_done(root, index):
            log.info("stage %d (%s) already finished: %s", index, name, curriculum.export_dir(root, index))
            results.append({"stage": name, "index": index, "skipped": True,
                            "export": str(curriculum.export_dir(root, index))})
            continue
        scfg = stage_config(cfg, curriculum, index, overrides, compose_fn)
        log.info("stage %d/%d: %s", index + 1, len(curriculum.stages), name)
        results.append(train_stage(scfg))
    return results


def _summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("stage", "index", "global_step", "export", "probe", "metrics", "skipped")
    return [{k: r[k] for k in keep if k in r} for r in results]


@user_errors
def task(cfg) -> None:
    from vexpress.utils.io import write_json

    results = run_curriculum(cfg)
    out = Path(cfg.paths.output_dir)
    if out.is_dir():
        write_json(out / "train_summary.json", _summary(results))
    print(json.dumps([{k: r.get(k) for k in ("stage", "global_step", "export")} for r in results], indent=1))


def main() -> None:
    import hydra

    hydra.main(version_base="1.3", config_path=config_path(), config_name="train")(task)()


if __name__ == "__main__":  # pragma: no cover
    main()
