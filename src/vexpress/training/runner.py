"""The curriculum loop: every stage of a training config's curriculum, in order, each in its own ``trainer.fit``.

:class:`CurriculumRunner` is what ``vexpress-train``, ``make demo`` and the multi-seed studies call::

    runner = CurriculumRunner(cfg, overrides)     # cfg: conf/train.yaml composed with `overrides`
    results = runner.run()                        # one summary dict per stage
    runner.write_summary(results)                 # <run>/train_summary.json

For every stage of ``curriculum.stages`` the config is composed again with ``stage=<name>`` (plus the overrides),
so everything that interpolates ``${stage.*}`` (frames and batch size of the data, the learning rate,
``max_steps``) follows the stage; the curriculum's ``stage_overrides`` for that stage are merged on top, and a
chained stage gets ``stage.init_from`` = the previous stage's export. A fresh Trainer is built per stage.

Re-running on the same output folder resumes: a finished stage whose export was made with the same stage key (a hash
of everything that decides its result, :func:`stage_key`) is skipped, an unfinished one continues from its newest
readable checkpoint (``last.ckpt``, else the previous step checkpoint, with a warning; loaded with
``weights_only=True``). ``run(shared=...)`` also reuses finished stages of other runs with the same key (the demo
trains the image stage shared by the recipe and an ablation once).

Composing stage configs needs Hydra's global config search path (``hydra.initialize_config_dir``, or a
``@hydra.main`` application). Logging under Hydra is the application's business
(:func:`vexpress.utils.logging.tidy_lightning_logging`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Sequence

import lightning.pytorch as pl
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vexpress.errors import InputError
from vexpress.models.weights import foundation_networks_digest, is_foundation, load_foundation_vae, vae_encoder_digest
from vexpress.synthetic.generate import encoder_identity
from vexpress.training.checkpoints import resume_checkpoint
from vexpress.training.curriculum import Curriculum
from vexpress.utils.io import write_json
from vexpress.utils.paths import CONF_DIR

log = logging.getLogger("vexpress.train")

#: Config parts that decide what a stage computes (paths, loggers, progress bars and names do not).
_KEY_PARTS = ("stage", "model", "data", "noise_scheduler", "seed", "resumable_data")
#: data settings that do not change what a stage learns; ``_target_`` is where the DataModule class lives, which a
#: move of code must not turn into a retrain (its arguments are what count)
_KEY_IGNORE_DATA = ("_target_", "cache_dir", "latent_cache", "num_workers", "persistent_workers", "pin_memory",
                    "workers_for_synthesis", "prefetch_factor")
_KEY_TRAINER = ("max_steps", "precision", "gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches",
                "devices", "num_nodes")
#: What a stage's summary record keeps (the trainer and model of a stage trained in this process are dropped).
_SUMMARY_KEYS = ("stage", "index", "global_step", "export", "probe", "metrics", "skipped", "stage_key")


# ---------------------------------------------------------------------------------------------------------------
# stage configs
# ---------------------------------------------------------------------------------------------------------------
def compose_stage_config(overrides: Sequence[str], stage_name: str) -> DictConfig:
    """The full training config with ``stage=<stage_name>`` (a ``stage=`` choice in ``overrides`` is replaced)."""
    kept = [o for o in overrides if not o.lstrip("+~").split("=", 1)[0] == "stage"]
    return compose(config_name="train", overrides=kept + [f"stage={stage_name}"])


def check_stage_names(names: Sequence[str]) -> None:
    """Every stage named by the curriculum (or its overrides) must be a ``conf/stage/<name>.yaml`` option."""
    known = sorted(p.stem for p in (CONF_DIR / "stage").glob("*.yaml"))
    bad = sorted({n for n in names if n not in known})
    if bad:
        raise InputError(f"curriculum names unknown stages {bad}; stage configs are {known}")


def with_stage_overrides(stage: DictConfig, delta: Mapping[str, Any] | None) -> DictConfig:
    """A stage's config with a curriculum's ``stage_overrides`` entry merged on top. The entry may set options that
    the stage's YAML leaves out (``timestep_bias``, ``lr_scale``: absent there so that existing stage keys stay)."""
    if not delta:
        return stage
    base = OmegaConf.create(OmegaConf.to_container(stage, resolve=False))
    OmegaConf.set_struct(base, False)
    return OmegaConf.merge(base, OmegaConf.create(dict(delta)))


def stage_key(scfg: DictConfig, previous: str = "") -> str:
    """A short hash of everything that determines a stage's result (used to reuse finished stages safely)."""
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
    init_from = (c.get("stage") or {}).get("init_from") if not previous else None
    if init_from and is_foundation(str(init_from)):
        # a first stage that starts from a foundation: its networks count, not the folder (a rebuilt foundation at
        # the same path is another starting point, a copy elsewhere the same one); other keys are as before
        part["foundation"] = foundation_networks_digest(str(init_from))
        part["stage"] = {k: v for k, v in part["stage"].items() if k != "init_from"}
    restore = (part.get("stage") or {}).get("restore") if isinstance(part.get("stage"), dict) else None
    if isinstance(restore, dict) and restore.get("from") and is_foundation(str(restore["from"])):
        # parameters taken from a foundation: its networks count, as for init_from above
        part["stage"] = {**part["stage"], "restore": {**restore, "from": foundation_networks_digest(
            str(restore["from"]))}}
    _content_not_place(part)
    callbacks = c.get("callbacks") or {}
    ema = callbacks.get("ema")
    if ema and (callbacks.get("stage_export") or {}).get("use_ema", True):
        # the export holds the average, not the last weights: an EMA stage is another result (absent: keys as before)
        part["ema"] = {k: ema.get(k) for k in ("decay", "warmup", "every_n_steps")}
    blob = json.dumps(part, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _content_not_place(part: dict) -> None:
    """Replace, in a stage key's parts, the folders whose files decide the stage by what they hold: a synthetic
    set's audio encoder (its files' digest, as the data's own cache key has it) and a foundation's VAE (its encoder
    half: the latents a stage learns from; a decoder fine-tune leaves stages valid). So the same foundation in
    another folder or checkout reuses trained stages, and a refitted one does not."""
    synthetic = (part.get("data") or {}).get("synthetic")
    if isinstance(synthetic, dict) and isinstance(synthetic.get("audio_encoder"), dict):
        part["data"]["synthetic"] = {**synthetic, "audio_encoder": encoder_identity(synthetic["audio_encoder"])}
    vae = (part.get("model") or {}).get("vae")
    if isinstance(vae, dict) and vae.get("directory") and is_foundation(str(vae["directory"])):
        encoder = vae_encoder_digest(load_foundation_vae(str(vae["directory"])))
        part["model"] = {**part["model"], "vae": {**{k: v for k, v in vae.items() if k != "directory"},
                                                  "foundation_vae_encoder": encoder}}


def _task_overrides() -> list[str]:
    """The command line's overrides of a ``@hydra.main`` application (none outside one)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _choice(group: str) -> str:
    """The command line's option of a config group (``data=prepared`` -> ``prepared``), or ``""``."""
    if not HydraConfig.initialized():
        return ""
    return str(HydraConfig.get().runtime.choices.get(group) or "")


# ---------------------------------------------------------------------------------------------------------------
# one stage
# ---------------------------------------------------------------------------------------------------------------
def _instantiate_group(node: Any) -> list:
    """Instantiate every ``_target_`` entry of a dict-of-configs group (callbacks, logger); skip nulls."""
    out = []
    if not node:
        return out
    for _, conf in node.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            out.append(instantiate(conf))
    return out


def _checkpoint_dir(cfg: DictConfig) -> Path:
    """Where the stage's checkpoint callback writes (its ``dirpath``; by default the layout's ``checkpoint_dir``)."""
    configured = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    return Path(str(configured or cfg.checkpoint_dir))


def _resume_checkpoint(cfg: DictConfig) -> str | None:
    """The newest readable checkpoint of the stage (see :func:`vexpress.training.checkpoints.resume_checkpoint`)."""
    if not cfg.get("resume", True):
        return None
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


def check_data_against_model(cfg: DictConfig, model: Any) -> None:
    """The data's frame size and latent downscale fit the model and its VAE (a one-line error naming the setting
    to change, before any training work: a mismatch otherwise fails deep inside a training step)."""
    check = getattr(model, "check_data", None)
    if check is None:
        return
    image_size = OmegaConf.select(cfg, "data.image_size", default=None)
    downscale = OmegaConf.select(cfg, "data.latent_downscale", default=None)
    check(image_size=None if image_size is None else int(image_size),
          latent_downscale=None if downscale is None else int(downscale),
          data_name=_choice("data"), model_name=_choice("model"))


def train_stage(cfg: DictConfig) -> dict[str, Any]:
    """One ``trainer.fit`` for the stage in ``cfg`` (a stage config of :meth:`CurriculumRunner.stage_config`);
    returns a summary (export folder, steps, probe history, metrics) plus the ``trainer`` and ``model``."""
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


# ---------------------------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------------------------
class CurriculumRunner:
    """Runs the curriculum of a composed training config, stage by stage (see the module docstring).

    Args:
        cfg: ``conf/train.yaml`` composed with ``overrides``; ``cfg.paths.output_dir`` is the run folder.
        overrides: the overrides ``cfg`` was composed with; every stage's config is composed again from them with
            ``stage=<name>``. Default: the command line's (inside a ``@hydra.main`` application).
    """

    def __init__(self, cfg: DictConfig, overrides: Sequence[str] | None = None):
        self.cfg = cfg
        self.overrides = list(overrides) if overrides is not None else _task_overrides()
        self.curriculum: Curriculum = instantiate(cfg.curriculum, _convert_="all")
        check_stage_names(list(self.curriculum.stages) + list(self.curriculum.stage_overrides))
        self.root = Path(cfg.paths.output_dir)

    def stage_config(self, index: int) -> DictConfig:
        """The config of stage ``index``: composed with ``stage=<name>``, the curriculum's ``stage_overrides`` for
        it merged on top, its initial weights (the previous export when chained), its position and stage key."""
        curriculum, name = self.curriculum, self.curriculum.stages[index]
        scfg = self.cfg if self.cfg.stage.name == name else compose_stage_config(self.overrides, name)
        scfg = OmegaConf.create(OmegaConf.to_container(scfg, resolve=False))
        OmegaConf.set_struct(scfg, False)
        scfg.stage_index = index
        for key, value in curriculum.stage_paths(self.root, index).items():
            scfg[key] = value
        scfg.stage = with_stage_overrides(scfg.stage, curriculum.stage_overrides.get(name))
        scfg.stage.init_from = curriculum.init_source(self.root, index, scfg.stage.get("init_from"))
        previous = ""
        if index > 0 and curriculum.chain:
            previous = curriculum.done_info(self.root, index - 1).get("stage_key", "")
        scfg.stage_key = stage_key(scfg, previous)
        return scfg

    def is_current(self, index: int, key: str) -> bool:
        """Stage ``index`` is exported completely, made with stage key ``key``."""
        return bool(key) and self.curriculum.done_info(self.root, index).get("stage_key") == key

    def _adopt(self, index: int, source: Path) -> None:
        """Copy another run's finished stage folder (same stage key) into this run's place for stage ``index``."""
        dst = self.curriculum.stage_dir(self.root, index)
        tmp = dst.with_name(f".{dst.name}.copying")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)
        log.info("stage %d (%s) is identical to a trained one: reused %s", index, self.curriculum.stages[index],
                 source)

    def run(self, shared: MutableMapping[str, Path] | None = None) -> list[dict[str, Any]]:
        """Run every stage in order; with ``cfg.resume`` (default) a stage already finished under the same key is
        skipped. ``shared``: stage key -> a finished stage folder of another run, read and extended: a stage
        whose key is there is copied instead of trained (its inputs are identical by construction).

        Returns one dict per stage: ``stage``, ``index``, ``stage_key``, ``stage_dir``, ``export`` and, for a stage
        trained now, ``global_step``, ``probe``, ``metrics``, ``trainer``, ``model``; ``skipped`` for the others.
        """
        curriculum, root, resume = self.curriculum, self.root, self.cfg.get("resume", True)
        results = []
        for index, name in enumerate(curriculum.stages):
            scfg = self.stage_config(index)
            key = scfg.stage_key
            if resume and shared is not None and not self.is_current(index, key) and key in shared:
                self._adopt(index, Path(shared[key]))
            if resume and self.is_current(index, key):
                log.info("stage %d (%s) already finished: %s", index, name, curriculum.export_dir(root, index))
                result = {"stage": name, "index": index, "skipped": True, "stage_key": key,
                          "export": str(curriculum.export_dir(root, index))}
            else:
                log.info("stage %d/%d: %s", index + 1, len(curriculum.stages), name)
                result = {**train_stage(scfg), "stage_key": key}
            result["stage_dir"] = str(curriculum.stage_dir(root, index))
            if shared is not None and self.is_current(index, key):
                shared.setdefault(key, curriculum.stage_dir(root, index))
            results.append(result)
        return results

    # -----------------------------------------------------------------------------------------------------------
    @property
    def summary_path(self) -> Path:
        return self.curriculum.summary_path(self.root)

    def write_summary(self, results: Sequence[dict[str, Any]]) -> bool:
        """Write the run's ``train_summary.json`` after :meth:`run` (merged with the previous one, see
        :func:`merge_summary`). A rerun that trained nothing keeps the existing file exactly: returns False."""
        previous = read_summary(self.summary_path)
        if results and all(r.get("skipped") for r in results) and previous:
            return False
        if self.root.is_dir():
            write_json(self.summary_path, merge_summary(previous, results))
        return True


def read_summary(path: Path) -> list[dict[str, Any]]:
    """The stage records of a ``train_summary.json`` (empty when missing or unreadable)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def merge_summary(previous: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's summary after a (re)run: a stage skipped because it was already finished keeps the record of the
    run that trained it (same index and stage key); stages trained now get their new record."""
    earlier = {(r.get("index"), r.get("stage_key")): r for r in previous if not r.get("skipped")}
    out = []
    for r in results:
        r = {k: r[k] for k in _SUMMARY_KEYS if k in r}
        if r.get("skipped"):
            old = earlier.get((r.get("index"), r.get("stage_key")))
            if old is not None:
                r = old
        out.append(r)
    return out
