"""``StageExport``: at the end of a completed stage, write its weights in the official file layout.

The folder (see :mod:`vexpress.models.weights`) holds ``vexpress.json`` (network config), the five official
safetensors files and optionally the VAE; the ``DONE`` marker is written last. EMA weights are exported when an
``EMA`` callback is attached (``use_ema``). An interrupted stage (fewer steps than ``trainer.max_steps``) exports
nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import lightning.pytorch as pl

from vexpress.callbacks.ema import ema_context
from vexpress.training.export import export_stage

log = logging.getLogger(__name__)


class StageExport(pl.Callback):
    """Args:
    directory: export folder of the stage.
    include_vae: also save the LitModule's VAE under ``vae/`` (so the export is self-contained).
    use_ema: export the EMA weights when an EMA callback is attached.
    audio_encoder: description of the audio encoder the model was trained with (name, dim, path).
    extra: stored in the manifest (stage, experiment, ...).
    """

    def __init__(self, directory: str, include_vae: bool = True, use_ema: bool = True,
                 audio_encoder: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None):
        super().__init__()
        self.directory = Path(directory)
        self.include_vae = bool(include_vae)
        self.use_ema = bool(use_ema)
        self.audio_encoder = dict(audio_encoder) if audio_encoder else None
        self.extra = dict(extra or {})
        self.exported: Path | None = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_steps > 0 and trainer.global_step < trainer.max_steps:
            log.warning("stage stopped at step %d of %d: not exporting", trainer.global_step, trainer.max_steps)
            return
        if trainer.is_global_zero:
            extra = {**self.extra, "global_step": int(trainer.global_step)}
            vae = pl_module.vae if self.include_vae else None
            ctx = ema_context(trainer, pl_module) if self.use_ema else None
            if ctx is None:
                self.exported = export_stage(self.directory, pl_module.net, vae=vae,
                                             audio_encoder=self.audio_encoder, extra=extra)
            else:
                with ctx:
                    self.exported = export_stage(self.directory, pl_module.net, vae=vae,
                                                 audio_encoder=self.audio_encoder, extra=extra)
            log.info("exported stage weights to %s", self.exported)
        trainer.strategy.barrier("stage_export")
