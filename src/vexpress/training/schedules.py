"""Scalar schedules inside one training stage (dropout rates, lip-loss weight, ...).

A schedule maps the *progress* through a stage (0 at its first step, 1 at its last) to a value. Configs give either
a plain number (constant) or a mapping ``{start, end, begin, finish}`` (a linear ramp from ``start`` to ``end``
between the fractions ``begin`` and ``finish`` of the stage, constant outside). Nothing here holds state: the value
at a step is a pure function of the step, which keeps resumed runs identical to uninterrupted ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from vexpress.errors import InputError


@dataclass(frozen=True)
class Ramp:
    """Linear ramp ``start -> end`` over the fraction ``[begin, finish]`` of a stage, constant outside.

    Attributes:
        start: value before (and at) ``begin``.
        end: value at (and after) ``finish``.
        begin: fraction of the stage where the ramp starts (0..1).
        finish: fraction of the stage where the ramp ends (0..1, >= begin).
    """

    start: float
    end: float
    begin: float = 0.0
    finish: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.begin <= self.finish <= 1.0):
            raise InputError(f"ramp fractions must satisfy 0 <= begin <= finish <= 1, got {self.begin}, {self.finish}")

    def __call__(self, progress: float) -> float:
        if self.finish <= self.begin:
            return float(self.end if progress >= self.finish else self.start)
        x = min(1.0, max(0.0, (progress - self.begin) / (self.finish - self.begin)))
        return float(self.start + (self.end - self.start) * x)

    @property
    def bounds(self) -> tuple[float, float]:
        return min(self.start, self.end), max(self.start, self.end)


def as_schedule(value: Any, what: str = "value", low: float | None = None, high: float | None = None) -> Ramp:
    """A number or a ``{start, end[, begin, finish]}`` mapping (or a :class:`Ramp`) -> :class:`Ramp`.

    ``low``/``high`` bound every value the schedule can take (e.g. 0..1 for probabilities).
    """
    if isinstance(value, Ramp):
        ramp = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        ramp = Ramp(float(value), float(value))
    elif isinstance(value, Mapping):
        unknown = set(value) - {"start", "end", "begin", "finish", "_target_"}
        if unknown or "start" not in value or "end" not in value:
            raise InputError(
                f"{what}: a schedule is a number or {{start, end, begin, finish}}, got keys {sorted(value)}"
            )
        ramp = Ramp(float(value["start"]), float(value["end"]), float(value.get("begin", 0.0)),
                    float(value.get("finish", 1.0)))
    else:
        raise InputError(f"{what}: expected a number or a {{start, end}} ramp, got {value!r}")
    lo, hi = ramp.bounds
    if (low is not None and lo < low) or (high is not None and hi > high):
        raise InputError(f"{what} must stay within [{low}, {high}], got {ramp}")
    return ramp


def stage_progress(step: int, total_steps: int) -> float:
    """Fraction of a stage done before optimisation step ``step`` (0-based): 0 at the first, 1 at the last."""
    if total_steps <= 1:
        return 1.0 if step > 0 else 0.0
    return min(1.0, max(0.0, step / (total_steps - 1)))


TIMESTEP_BIAS_STRATEGIES = ("later", "earlier", "range")


@dataclass(frozen=True)
class TimestepBias:
    """A training stage's timestep distribution, when it is not the official uniform one (beyond the paper).

    The biased timesteps are ``multiplier`` times as likely as the others:

    - ``later``: the last ``portion`` of ``0..T-1`` (the noisiest timesteps, where the mouth's shape is decided);
    - ``earlier``: the first ``portion`` (the least noisy: texture and detail);
    - ``range``: ``begin <= t < end``.

    ``{strategy: later, portion: 0.5, multiplier: 3}`` draws 75 % of the timesteps from ``t >= T/2``. Built from a
    stage's ``timestep_bias`` mapping with :meth:`from_config` (one-line :class:`InputError` for a bad value).
    """

    strategy: str
    multiplier: float
    portion: float = 0.5
    begin: int = 0
    end: int = 0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, what: str = "timestep_bias") -> "TimestepBias | None":
        if cfg is None:
            return None
        if not isinstance(cfg, Mapping):
            raise InputError(f"{what} must be a mapping like {{strategy: later, portion: 0.5, multiplier: 3}} or "
                             f"null, got {cfg!r}")
        unknown = sorted(set(cfg) - {"strategy", "multiplier", "portion", "begin", "end"})
        if unknown:
            raise InputError(f"{what}: unknown keys {unknown}; use strategy, multiplier, portion, begin, end")
        strategy = str(cfg.get("strategy", ""))
        if strategy not in TIMESTEP_BIAS_STRATEGIES:
            raise InputError(f"{what}.strategy must be one of {list(TIMESTEP_BIAS_STRATEGIES)}, got {strategy!r}")
        try:
            multiplier = float(cfg.get("multiplier", 2.0))
            portion = float(cfg.get("portion", 0.5))
            begin, end = int(cfg.get("begin", 0)), int(cfg.get("end", 0))
        except (TypeError, ValueError) as err:
            raise InputError(f"{what}: multiplier and portion must be numbers, begin and end integers ({err})") \
                from err
        if not multiplier > 0:
            raise InputError(f"{what}.multiplier must be > 0, got {multiplier}")
        if strategy != "range" and not 0.0 < portion < 1.0:
            raise InputError(f"{what}.portion must be in (0, 1), got {portion}")
        if strategy == "range" and not 0 <= begin < end:
            raise InputError(f"{what}: strategy range needs 0 <= begin < end, got begin={begin} end={end}")
        return cls(strategy, multiplier, portion, begin, end)

    def weights(self, num_train_timesteps: int) -> list[float]:
        """Relative probability of every timestep ``0..T-1``."""
        n = int(num_train_timesteps)
        w = [1.0] * n
        if self.strategy == "range":
            if self.end > n:
                raise InputError(f"timestep_bias: end={self.end} is beyond the {n} training timesteps")
            w[self.begin:self.end] = [self.multiplier] * (self.end - self.begin)
        else:
            k = max(1, min(n - 1, round(self.portion * n)))
            if self.strategy == "later":
                w[n - k:] = [self.multiplier] * k
            else:
                w[:k] = [self.multiplier] * k
        return w
