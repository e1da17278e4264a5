"""``InfluenceProbe``: every N steps, how much each condition moves the prediction (beyond the paper).

On a fixed batch (the first ``max_samples`` clips of the first training batch of the fit), with fixed noise and
fixed timesteps, it logs ``probe/<cond>`` = ||pred_all - pred_without_<cond>|| / ||pred_all|| for the reference,
keypoints and audio, plus ``probe/<cond>_lip`` inside the lip mask (see :mod:`vexpress.training.probe`). The paper's
claim is that audio is a weak signal; on a dashboard the audio curve should rise through the stages.
"""

from __future__ import annotations

from typing import Any, Sequence

import lightning.pytorch as pl
import torch

from vexpress.callbacks.ema import ema_context
from vexpress.training.probe import influence_on_batch

_KEYS = ("target_latents", "target_images", "reference_latents", "reference_image", "kps_images", "audio_windows",
         "lip_masks", "caption")


class InfluenceProbe(pl.Callback):
    """Args:
    every_n_steps: probe period in optimisation steps (also probed at the first and the last step).
    timesteps: diffusion timesteps averaged over.
    max_samples: clips of the fixed batch.
    seed: seed of the probe's fixed noise.
    """

    def __init__(self, every_n_steps: int = 100, timesteps: Sequence[int] = (250, 500, 750), max_samples: int = 2,
                 seed: int = 1234):
        super().__init__()
        self.every_n_steps = max(1, int(every_n_steps))
        self.timesteps = [int(t) for t in timesteps]
        self.max_samples = int(max_samples)
        self.seed = int(seed)
        self.batch: dict[str, torch.Tensor] | None = None
        self.history: list[tuple[int, dict[str, float]]] = []

    def _capture(self, batch: Any) -> None:
        self.batch = {k: batch[k][: self.max_samples].detach().clone() for k in _KEYS
                      if isinstance(batch.get(k), torch.Tensor)}

    @torch.no_grad()
    def measure(self, pl_module: pl.LightningModule) -> dict[str, float]:
        """Influence of each condition on the fixed batch (the network in eval mode, EMA weights if attached)."""
        assert self.batch is not None
        batch = {k: v.to(pl_module.device) for k, v in self.batch.items()}
        x = pl_module.prepare(batch, None, sample=False)
        return influence_on_batch(pl_module.net, pl_module.targets, x["latents"], ref_latents=x["ref_latents"],
                                  audio_windows=x["audio_windows"], kps_images=x["kps_images"],
                                  lip_masks=x["lip_masks"], timesteps=self.timesteps, seed=self.seed,
                                  audio_tokens=x.get("audio_tokens"))

    def _probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.batch is None or not trainer.is_global_zero:
            return
        was_training = pl_module.net.training
        pl_module.net.eval()
        try:
            with ema_context(trainer, pl_module):
                values = self.measure(pl_module)
        finally:
            pl_module.net.train(was_training)
        step = int(trainer.global_step)
        self.history.append((step, values))
        if trainer.logger is not None:
            trainer.logger.log_metrics({f"probe/{k}": v for k, v in values.items()}, step=step)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.batch is None:
            self._capture(batch)
            if trainer.global_step == 0:
                self._probe(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = int(trainer.global_step)
        if step % self.every_n_steps == 0 or (trainer.max_steps > 0 and step >= trainer.max_steps):
            if not self.history or self.history[-1][0] != step:
                self._probe(trainer, pl_module)
