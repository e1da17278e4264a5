"""Conditional dropout, the functional core (spec §4.3, house style §4.6).

Per sample, independently:

- with probability ``uncond`` every condition is dropped together (classifier-free guidance; official ratio 0.1,
  drawn once per step for the whole batch in the official code, per sample here);
- otherwise the reference, keypoints and audio are each dropped with their own probability. The paper's
  "conditional dropout" drops the *strong* conditions (reference, keypoints) so that the weak audio has to explain
  the mouth; the released configs set those rates to 0.

The rates may change within a stage (:mod:`vexpress.training.schedules`). The caller owns the generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from vexpress.errors import InputError
from vexpress.training.schedules import Ramp, as_schedule

CONDITIONS = ("reference", "kps", "audio")


@dataclass(frozen=True)
class DropRates:
    """Probabilities applied at one step."""

    uncond: float = 0.0
    reference: float = 0.0
    kps: float = 0.0
    audio: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"uncond": self.uncond, "reference": self.reference, "kps": self.kps, "audio": self.audio}


@dataclass(frozen=True)
class DropSchedule:
    """Rates of one stage, each a constant or a ramp over the stage (see :class:`Ramp`)."""

    uncond: Ramp
    reference: Ramp
    kps: Ramp
    audio: Ramp

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, what: str = "dropout") -> "DropSchedule":
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"uncond", *CONDITIONS}
        if unknown:
            raise InputError(f"{what}: unknown keys {sorted(unknown)}; use uncond, reference, kps, audio")
        return cls(**{k: as_schedule(cfg.get(k, 0.0), f"{what}.{k}", 0.0, 1.0) for k in ("uncond", *CONDITIONS)})

    def at(self, progress: float) -> DropRates:
        return DropRates(self.uncond(progress), self.reference(progress), self.kps(progress), self.audio(progress))


def sample_drop(rates: DropRates, batch_size: int, generator: torch.Generator):
    """Draw one step's decisions.

    Returns:
        ``(DropMask, uncond)``: the per-sample mask for the network and the (B,) bool of joint drops.
    """
    from vexpress.models.conditioning import DropMask

    u = torch.rand(4, batch_size, generator=generator)
    uncond = u[0] < rates.uncond
    ref = (u[1] < rates.reference) | uncond
    kps = (u[2] < rates.kps) | uncond
    aud = (u[3] < rates.audio) | uncond
    return DropMask(ref, kps, aud), uncond
