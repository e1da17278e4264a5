"""``VideoSampleLogger``: sample videos (with audio) of the current weights, every N steps and at the stage end.

Rank 0 only. The clip is the first record of the data module's validation split (else training split): its first
frame is the reference, its keypoints drive the head (``no_retarget``) and its audio drives the mouth -- the
self-reconstruction protocol of the evaluation. Rendering goes through the inference pipeline
(:class:`vexpress.pipelines.VExpressPipeline`) with the module's own network and VAE (EMA weights if attached);
the MP4 is written under ``directory`` and logged as ``samples/video`` to W&B when a W&B logger is attached.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np

from vexpress.callbacks.ema import ema_context

log = logging.getLogger(__name__)


class VideoSampleLogger(pl.Callback):
    """Args:
    every_n_steps: render period in optimisation steps (and once at the end of the stage).
    num_inference_steps, guidance_scale, sampler: sampling settings.
    max_frames: frames rendered (from the clip's start).
    seed: sampling seed.
    directory: where the MP4 files go.
    audio_encoder: encoder config (``vexpress.audio.build_audio_encoder``); default: the module's own encoder, else
        log-mel.
    """

    def __init__(self, every_n_steps: int = 1000, num_inference_steps: int = 10, guidance_scale: float = 2.5,
                 max_frames: int = 24, seed: int = 42, directory: str = "samples", sampler: str = "ddim",
                 audio_encoder: Any = None):
        super().__init__()
        self.every_n_steps = max(1, int(every_n_steps))
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.max_frames = int(max_frames)
        self.seed = int(seed)
        self.directory = Path(directory)
        self.sampler = sampler
        self.audio_encoder = audio_encoder
        self.written: list[Path] = []

    def _record(self, trainer: pl.Trainer):
        dm = trainer.datamodule
        for name in ("val_dataset", "train_dataset"):
            ds = getattr(dm, name, None)
            if ds is not None and getattr(ds, "records", None):
                return ds.records[0]
        return None

    def render(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path | None:
        from vexpress.audio.encoders import build_audio_encoder
        from vexpress.pipelines import VExpressPipeline

        rec = self._record(trainer)
        if rec is None or pl_module.vae is None:
            log.warning("no clip or no VAE to render a sample video with; skipped")
            return None
        encoder = pl_module.audio_encoder if hasattr(pl_module.audio_encoder, "encode") else \
            build_audio_encoder(self.audio_encoder)
        n = min(self.max_frames, int(rec.num_frames))
        fps = float(rec.fps)
        wave = rec.audio.numpy()[: int(round(n / fps * 16000))].astype(np.float32)
        kps = rec.kps.numpy()[:n]
        path = self.directory / f"step_{trainer.global_step:07d}.mp4"
        was_training = pl_module.net.training
        try:
            with ema_context(trainer, pl_module):
                pipe = VExpressPipeline(pl_module.net, pl_module.vae, encoder, sampler=self.sampler)
                pipe(rec.frames([0])[0], (wave, 16000), kps=kps, reference_kps=kps[0], retarget="no_retarget",
                     height=int(rec.height), width=int(rec.width), fps=fps, crop="none", output_path=path,
                     num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
                     reference_attention_weight=1.0, audio_attention_weight=1.0, seed=self.seed, progress=False)
        finally:
            pl_module.net.train(was_training)
        self.written.append(path)
        for lg in trainer.loggers:
            experiment = getattr(lg, "experiment", None)
            if type(lg).__name__ == "WandbLogger" and experiment is not None:
                import wandb

                experiment.log({"samples/video": wandb.Video(str(path), format="mp4"),
                                "trainer/global_step": trainer.global_step})
        return path

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.is_global_zero and trainer.global_step % self.every_n_steps == 0:
            self.render(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and (not self.written or not self.written[-1].name.endswith(
                f"{trainer.global_step:07d}.mp4")):
            self.render(trainer, pl_module)
