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
an unfinished one continues from its newest readable checkpoint (``checkpoints/last.ckpt``, else the previous step
checkpoint, with a warning; loaded with ``weights_only=True``). A rerun of a finished run trains nothing, keeps its
``train_summary.json`` and exits 0.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from vexpress.cli._common import hydra_main, tidy_lightning_logging, user_errors

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
        scfg.stage = OmegaConf.merge(scfg.stage, OmegaConf.create(dict(delta)))
    root = scfg.paths.output_dir
    scfg.stage.init_from = curriculum.init_source(root, index, scfg.stage.get("init_from"))
    previous = ""
    if index > 0 and curriculum.chain:
        previous = _done_info(curriculum.export_dir(root, index - 1)).get("stage_key", "")
    scfg.stage_key = stage_key(scfg, previous)
    return scfg


def _done_info(export_dir: Path) -> dict:
    marker = Path(export_dir) / "DONE"
    try:
        return json.loads(marker.read_text() or "{}") if marker.is_file() else {}
    except json.JSONDecodeError:
        return {}


#: Config parts that decide what a stage computes (paths, loggers, progress bars and names do not).
_KEY_PARTS = ("stage", "model", "data", "noise_scheduler", "seed", "resumable_data")
_KEY_IGNORE_DATA = ("cache_dir", "latent_cache", "num_workers", "persistent_workers", "pin_memory",
                    "workers_for_synthesis", "prefetch_factor")
_KEY_TRAINER = ("max_steps", "precision", "gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches",
                "devices", "num_nodes")


def stage_key(scfg, previous: str = "") -> str:
    """A short hash of everything that determines a stage's result (used to reuse finished stages safely)."""
    import hashlib

    from omegaconf import OmegaConf

    c = OmegaConf.to_container(scfg, resolve=True, throw_on_missing=False)
    part = {k: c.get(k) for k in _KEY_PARTS}
    if isinstance(part.get("data"), dict):
        part["data"] = {k: v for k, v in part["data"].items() if k not in _KEY_IGNORE_DATA}
    part["dropout"] = (c.get("dropout") or {}).get("rates")
    part["trainer"] = {k: (c.get("trainer") or {}).get(k) for k in _KEY_TRAINER}
    if previous and isinstance(part.get("stage"), dict):
        # a chained stage starts from the previous export: its key (content) counts, not the folder it lives in
        part["stage"] = {k: v for k, v in part["stage"].items() if k != "init_from"}
    part["previous_stage"] = previous
    blob = json.dumps(part, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def stage_is_current(curriculum, root: Path, index: int, key: str) -> bool:
    """The stage's export is complete and was made with the same stage key."""
    return bool(key) and _done_info(curriculum.export_dir(root, index)).get("stage_key") == key


def check_stage_names(names: Sequence[str]) -> None:
    """Every stage named by the curriculum (or its overrides) must be a ``conf/stage/<name>.yaml`` option."""
    from vexpress.errors import InputError
    from vexpress.utils.paths import CONF_DIR

    known = sorted(p.stem for p in (CONF_DIR / "stage").glob("*.yaml"))
    bad = sorted({n for n in names if n not in known})
    if bad:
        raise InputError(f"curriculum names unknown stages {bad}; stage configs are {known}")


def _checkpoint_dir(cfg) -> Path:
    from omegaconf import OmegaConf

    configured = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    return Path(str(configured)) if configured else Path(cfg.stage_dir) / "checkpoints"


def _resume_checkpoint(cfg) -> str | None:
    """The newest readable checkpoint of the stage (see :func:`vexpress.callbacks.checkpoint.resume_checkpoint`)."""
    if not cfg.get("resume", True):
        return None
    from vexpress.callbacks.checkpoint import resume_checkpoint

    return resume_checkpoint(_checkpoint_dir(cfg), str(cfg.stage.name))


def _finish_wandb() -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _make_resumable(datamodule: Any, seed: int) -> None:
    """Wrap the data module's training loader so that its position is saved in checkpoints (exact resume).

    Adapter: ``TalkingFaceDataModule`` returns a plain ``DataLoader``, which Lightning restarts from the beginning
    of the epoch on resume (see :mod:`vexpress.training.resumable`).
    """
    from vexpress.training.resumable import make_resumable

    original = datamodule.train_dataloader

    def train_dataloader():
        return make_resumable(original(), seed=seed)

    datamodule.train_dataloader = train_dataloader


def check_data_against_model(cfg, model: Any) -> None:
    """The data's frame size and latent downscale fit the model and its VAE (a one-line error naming the setting
    to change, before any training work: a mismatch otherwise fails deep inside a training step)."""
    from omegaconf import OmegaConf

    check = getattr(model, "check_data", None)
    if check is None:
        return
    image_size = OmegaConf.select(cfg, "data.image_size", default=None)
    downscale = OmegaConf.select(cfg, "data.latent_downscale", default=None)
    check(image_size=None if image_size is None else int(image_size),
          latent_downscale=None if downscale is None else int(downscale),
          data_name=_choice("data"), model_name=_choice("model"))


def _choice(group: str) -> str:
    """The command line's option of a config group (``data=prepared`` -> ``prepared``), or ``""``."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    return str(HydraConfig.get().runtime.choices.get(group) or "")


def train_stage(cfg) -> dict[str, Any]:
    """One ``trainer.fit`` for the stage in ``cfg``; returns a summary (export folder, steps, probe history)."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    tidy_lightning_logging()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    ckpt = _resume_checkpoint(cfg)  # an unreadable checkpoint folder fails here, before anything is built
    datamodule = instantiate(cfg.data)
    if cfg.get("resumable_data", True):
        _make_resumable(datamodule, int(cfg.seed))
    model = instantiate(cfg.model)
    check_data_against_model(cfg, model)
    callbacks = _instantiate_group(cfg.get("callbacks"))
    loggers = _instantiate_group(cfg.get("logger"))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers if loggers else False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
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
    check_stage_names(list(curriculum.stages) + list(curriculum.stage_overrides))
    root = Path(cfg.paths.output_dir)
    results = []
    for index, name in enumerate(curriculum.stages):
        scfg = stage_config(cfg, curriculum, index, overrides, compose_fn)
        if cfg.get("resume", True) and stage_is_current(curriculum, root, index, scfg.stage_key):
            log.info("stage %d (%s) already finished: %s", index, name, curriculum.export_dir(root, index))
            results.append({"stage": name, "index": index, "skipped": True, "stage_key": scfg.stage_key,
                            "export": str(curriculum.export_dir(root, index))})
            continue
        log.info("stage %d/%d: %s", index + 1, len(curriculum.stages), name)
        result = train_stage(scfg)
        result["stage_key"] = scfg.stage_key
        results.append(result)
    return results


def _summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("stage", "index", "global_step", "export", "probe", "metrics", "skipped", "stage_key")
    return [{k: r[k] for k in keep if k in r} for r in results]


SUMMARY = "train_summary.json"


def _read_summary(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def merge_summary(previous: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's summary after a (re)run: a stage skipped because it was already finished keeps the record of the
    run that trained it (same index and stage key); stages trained now get their new record."""
    earlier = {(r.get("index"), r.get("stage_key")): r for r in previous if not r.get("skipped")}
    out = []
    for r in _summary(list(results)):
        if r.get("skipped"):
            old = earlier.get((r.get("index"), r.get("stage_key")))
            if old is not None:
                r = old
        out.append(r)
    return out


@user_errors
def task(cfg) -> None:
    from vexpress.utils.io import write_json

    results = run_curriculum(cfg)
    out = Path(cfg.paths.output_dir)
    summary_path = out / SUMMARY
    previous = _read_summary(summary_path)
    if results and all(r.get("skipped") for r in results) and previous:
        # nothing was trained: the run's records stay exactly as the run that trained it wrote them
        log.info("run already finished: every stage is exported; kept %s", summary_path)
        print(f"run already finished: every stage of {out} is exported (summary: {summary_path})")
        return
    if out.is_dir():
        write_json(summary_path, merge_summary(previous, results))
    print(json.dumps([{k: r.get(k) for k in ("stage", "global_step", "export")} for r in results], indent=1))


def main() -> None:
    hydra_main("train", task, "vexpress-train")


if __name__ == "__main__":  # pragma: no cover
    main()
