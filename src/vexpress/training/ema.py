"""Exponential moving average of the trainable weights (functional core of the ``EMA`` callback)."""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping

import torch


class EMAWeights:
    """fp32 shadow copies of named parameters.

    Args:
        params: ``{name: parameter}`` to track (the trainable ones of a stage).
        decay: EMA decay per update.
        warmup: use ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early averages are not dominated by
            the initial weights (the usual diffusers ``use_ema_warmup`` shape without its power law).
    """

    def __init__(self, params: Mapping[str, torch.Tensor], decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0
        self.shadow = {n: p.detach().float().clone() for n, p in params.items()}

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, params: Mapping[str, torch.Tensor]) -> None:
        d = self.current_decay()
        for n, s in self.shadow.items():
            p = params[n].detach()
            if s.device != p.device:
                self.shadow[n] = s = s.to(p.device)
            s.mul_(d).add_(p.float(), alpha=1 - d)
        self.updates += 1

    @contextlib.contextmanager
    def applied(self, params: Mapping[str, torch.Tensor]) -> Iterator[None]:
        """Temporarily copy the averages into ``params`` (restored on exit)."""
        backup = {n: params[n].detach().clone() for n in self.shadow}
        try:
            with torch.no_grad():
                for n, s in self.shadow.items():
                    params[n].copy_(s.to(params[n].dtype))
            yield
        finally:
            with torch.no_grad():
                for n, b in backup.items():
                    params[n].copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "updates": self.updates,
                "shadow": {n: s.cpu() for n, s in self.shadow.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameters, e.g. {sorted(missing)[0]}")
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.updates = int(state["updates"])
        for n in self.shadow:
            self.shadow[n] = state["shadow"][n].float().to(self.shadow[n].device)
