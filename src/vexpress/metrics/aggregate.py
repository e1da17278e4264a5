"""torchmetrics wrappers of the weight-free per-clip metrics: the mean of per-clip values over clips.

Each ``update`` scores one clip with the functions of :mod:`vexpress.metrics.landmarks` and adds the finite values
to float64 sums (``dist_reduce_fx="sum"``); ``compute`` returns ``{name: mean over clips, "clips": n}``. Clips where a
value is NaN (e.g. no face in any frame) do not count for that value.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from vexpress.metrics.landmarks import kps_distance, landmark_distance, lipsync_score


class MeanMetric(Metric):
    """Mean over clips of several named per-clip values (NaN-aware)."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, keys: Sequence[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.keys = tuple(keys)
        for k in self.keys:
            self.add_state(f"{k}_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{k}_count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def add(self, values: Dict[str, float]) -> None:
        for k in self.keys:
            v = values.get(k)
            if v is None or not math.isfinite(float(v)):
                continue
            setattr(self, f"{k}_sum", getattr(self, f"{k}_sum") + float(v))
            setattr(self, f"{k}_count", getattr(self, f"{k}_count") + 1)

    def update(self, values: Dict[str, float]) -> None:  # type: ignore[override]
        self.add(values)

    def compute(self) -> Dict[str, Tensor]:
        out = {}
        for k in self.keys:
            n = getattr(self, f"{k}_count")
            out[k] = getattr(self, f"{k}_sum") / n if int(n) > 0 else torch.tensor(float("nan"), dtype=torch.float64)
        return out


class KpsDistance(MeanMetric):
    """KpsDis: ``update(pred_kps (T,3,2), driving_kps (T',3,2), pred_size=(W,H), target_size=None)``."""

    higher_is_better = False

    def __init__(self, **kwargs: Any):
        super().__init__(["kps_dis"], **kwargs)

    def update(self, pred, target, pred_size=None, target_size=None) -> None:  # type: ignore[override]
        self.add(kps_distance(np.asarray(pred), np.asarray(target), pred_size, target_size))


class LandmarkDistance(MeanMetric):
    """LMD: ``update(pred_landmarks (T,478,2), gt_landmarks (T,478,2), pred_size, target_size)``."""

    higher_is_better = False

    def __init__(self, **kwargs: Any):
        super().__init__(["lmd", "lmd_aligned"], **kwargs)

    def update(self, pred, target, pred_size=None, target_size=None) -> None:  # type: ignore[override]
        self.add(landmark_distance(np.asarray(pred), np.asarray(target), pred_size, target_size))


class LipSyncScore(MeanMetric):
    """Landmark lip-sync proxy: ``update(landmarks (T,478,2), wave (S,) 16 kHz, fps)``."""

    higher_is_better = True

    def __init__(self, max_lag: int = 15, use_diff: bool = False, **kwargs: Any):
        super().__init__(["lip_r0", "lip_r_best", "lip_conf"], **kwargs)
        self.max_lag = max_lag
        self.use_diff = use_diff

    def update(self, landmarks, wave, fps: float) -> None:  # type: ignore[override]
        self.add(lipsync_score(np.asarray(landmarks), np.asarray(wave), fps, max_lag=self.max_lag,
                               use_diff=self.use_diff))
