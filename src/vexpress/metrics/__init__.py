"""Evaluation metrics as torchmetrics ``Metric`` classes plus the per-clip functions behind them.

Feature-based (local weights, never downloaded): FID (:mod:`.fid`), FVD (:mod:`.fvd`), SyncNet LSE-C/D
(:mod:`.syncnet`), ArcFace identity (:mod:`.identity`). Weight-free: KpsDis, LMD and the landmark lip-sync score
(:mod:`.landmarks`), the landmark identity proxy (:mod:`.identity`). Shared maths: :mod:`.frechet`, :mod:`.mfcc`,
:mod:`.resize`. Submodules are imported on first use so ``import vexpress.metrics`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_fid": "fid", "FIDInceptionV3": "fid", "FrechetInceptionDistanceLocal": "fid",
    "FrechetVideoDistance": "fvd", "I3DFeatures": "fvd", "load_i3d_detector": "fvd", "sample_clips": "fvd",
    "SyncNetV2": "syncnet", "SyncNetScore": "syncnet", "load_syncnet": "syncnet", "syncnet_scores": "syncnet",
    "syncnet_face_crops": "syncnet",
    "mfcc": "mfcc",
    "frechet_distance": "frechet",
    "kps_distance": "landmarks", "landmark_distance": "landmarks", "lipsync_score": "landmarks",
    "ArcFaceEmbedder": "identity", "face_similarity": "identity", "identity_shape_error": "identity",
    "MeanMetric": "aggregate", "KpsDistance": "aggregate", "LandmarkDistance": "aggregate",
    "LipSyncScore": "aggregate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vexpress.metrics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vexpress.metrics' has no attribute {name!r}")
