"""``StageScheduler``: puts the model into the stage of its fit and guards that stage's invariants (house style §4.6).

One ``trainer.fit`` runs one stage; :class:`vexpress.training.runner.CurriculumRunner` loops over the curriculum and
builds a fresh Trainer per stage. This callback, per fit:

- ``setup``: :func:`~vexpress.training.stages.apply_stage` (initial weights, zero-init, ``requires_grad``,
  checkpointing) and the stage's per-group learning-rate factors -- before the optimizer is built and before DDP
  wraps the model;
- ``on_fit_start``: asserts the trainable set equals the stage's, and fingerprints every frozen parameter;
- every batch: sets the per-step knobs of the stage (lip-loss weight, when the stage sets one) and logs
  ``curriculum/*``;
- ``on_train_end``: asserts every frozen parameter is bit-identical to its value at the start.

Its ``state_dict`` carries the curriculum position (stage index and name); resuming a checkpoint of another stage
is refused.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import lightning.pytorch as pl
import torch

from vexpress.callbacks._util import log_metrics, stage_progress_of
from vexpress.errors import InputError
from vexpress.training.stages import (
    StageError,
    StageSpec,
    apply_stage,
    check_frozen_unchanged,
    check_trainable,
    fingerprint,
    frozen_parameters,
)

log = logging.getLogger(__name__)

#: The key of this callback's state in checkpoints written before it was renamed from ``CurriculumScheduler``.
LEGACY_STATE_KEY = "CurriculumScheduler"


class StageScheduler(pl.Callback):
    """Applies one curriculum stage to the model of a fit and checks the stage's invariants (module docstring).

    Args:
    stage: the stage this fit runs (a :class:`StageSpec` or its config mapping).
    stage_index: position of the stage in the curriculum.
    stages: names of all stages of the curriculum (for logging and checkpoint checks).
    check_frozen: fingerprint frozen parameters at the start and verify them at the end of the stage.
    """

    def __init__(self, stage: StageSpec | Mapping[str, Any], stage_index: int = 0,
                 stages: Sequence[str] | None = None, check_frozen: bool = True):
        super().__init__()
        self.spec = stage if isinstance(stage, StageSpec) else StageSpec(**dict(stage))
        self.stage_index = int(stage_index)
        self.stages = list(stages) if stages else [self.spec.name]
        self.check_frozen = bool(check_frozen)
        self.report = None
        self._frozen: dict[str, str] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.report = apply_stage(pl_module.net, self.spec)
        pl_module.lr_scale = dict(self.spec.lr_scale or {})  # read by configure_optimizers, which runs after setup
        pl_module.stage_lr_schedule = (None if self.spec.lr_schedule is None
                                       else {**self.spec.lr_schedule, "total_steps": int(self.spec.max_steps)})
        if self.spec.caption_distill is not None:
            if self.spec.caption_distill > 0 and getattr(pl_module, "caption_teacher", None) is None:
                raise InputError(f"stage {self.spec.name!r} sets caption_distill but the model has no caption "
                                 "teacher; set model.caption_teacher (vexpress.models.caption.CaptionEncoder)")
            pl_module.caption_distill_weight = float(self.spec.caption_distill)
        bias = self.spec.timestep_bias
        pl_module.timestep_weights = None
        if bias is not None:
            weights = bias.weights(pl_module.targets.num_train_timesteps)
            pl_module.timestep_weights = torch.tensor(weights, dtype=torch.float64)
        if trainer.is_global_zero:
            log.info(self.report.summary())

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_trainable(pl_module.net, self.spec)
        if self.check_frozen:
            self._frozen = fingerprint(frozen_parameters(pl_module.net))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.spec.lip_loss_weight is not None:
            pl_module.lip_loss_weight = self.spec.lip_loss_weight(stage_progress_of(trainer))
        log_metrics(pl_module, {"curriculum/stage": float(self.stage_index),
                                "curriculum/lip_loss_weight": float(pl_module.lip_loss_weight)})

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._frozen is not None:
            check_frozen_unchanged(pl_module.net, self._frozen, self.spec.name)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # checkpoints written before the rename hold this callback's state under its old class name
        states = checkpoint.get("callbacks") or {}
        if self.state_key not in states and LEGACY_STATE_KEY in states:
            self.load_state_dict(states[LEGACY_STATE_KEY])

    def state_dict(self) -> dict[str, Any]:
        return {"stage_index": self.stage_index, "stage_name": self.spec.name, "stages": list(self.stages)}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        name = state_dict.get("stage_name")
        if name != self.spec.name or int(state_dict.get("stage_index", -1)) != self.stage_index:
            raise StageError(
                f"checkpoint belongs to stage {state_dict.get('stage_index')}:{name}, this run is stage "
                f"{self.stage_index}:{self.spec.name}; resume it with stage={name} or start the stage afresh"
            )
