"""``EMA``: exponential moving average of a stage's trainable weights.

The averages are swapped in for the stage export and the probe/sample-video callbacks (via :meth:`EMA.applied`),
and stored in checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, Mapping

import lightning.pytorch as pl

from vexpress.training.ema import EMAWeights

log = logging.getLogger("vexpress.train")


class EMA(pl.Callback):
    """Args:
    decay: EMA decay per optimisation step.
    warmup: ramp the decay up over the first updates (``min(decay, (1 + n) / (10 + n))``: it reaches 0.99 only
        after 890 updates, so in a shorter stage the ramp, not ``decay``, sets the average; the stage end says so).
    every_n_steps: update every n optimisation steps.
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True, every_n_steps: int = 1):
        super().__init__()
        self.decay, self.warmup, self.every_n_steps = float(decay), bool(warmup), max(1, int(every_n_steps))
        self.weights: EMAWeights | None = None
        self._pending: Mapping[str, Any] | None = None

    @staticmethod
    def _trainable(pl_module: pl.LightningModule) -> dict:
        return {n: p for n, p in pl_module.net.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weights = EMAWeights(self._trainable(pl_module), self.decay, self.warmup)
        if self._pending is not None:
            self.weights.load_state_dict(self._pending)
            self._pending = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.weights is not None and trainer.global_step % self.every_n_steps == 0:
            self.weights.update(dict(pl_module.net.named_parameters()))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        w = self.weights
        if w is not None and w.warmup and w.updates and w.current_decay() < w.decay:
            log.info("EMA: after %d updates the warm-up ramp is at %.4f, below decay=%g: the ramp set this stage's "
                     "average (decay only binds after %d updates; warmup=false applies it from the first)",
                     w.updates, w.current_decay(), w.decay, _ramp_reaches(w.decay))

    @contextlib.contextmanager
    def applied(self, pl_module: pl.LightningModule) -> Iterator[None]:
        if self.weights is None:
            yield
            return
        with self.weights.applied(dict(pl_module.net.named_parameters())):
            yield

    def state_dict(self) -> dict[str, Any]:
        return self.weights.state_dict() if self.weights is not None else {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if state_dict:
            self._pending = state_dict


def _ramp_reaches(decay: float) -> int:
    """Updates after which the warm-up ramp ``(1 + n) / (10 + n)`` reaches ``decay``."""
    import math

    return max(0, math.ceil((10 * decay - 1) / (1 - decay)))


def ema_context(trainer: pl.Trainer, pl_module: pl.LightningModule):
    """The EMA weights if an :class:`EMA` callback is attached, else a no-op context."""
    for cb in trainer.callbacks:
        if isinstance(cb, EMA):
            return cb.applied(pl_module)
    return contextlib.nullcontext()
