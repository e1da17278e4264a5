"""Keypoint-sequence files: our format and the official ``kps.pth``.

Our format: a float32 tensor of shape (T, 3, 2), rows [left-in-image eye, right-in-image eye, nose], ``(x, y)``
pixels in 512x512 coordinates for driving sequences, written with ``torch.save`` so that
``torch.load(path, weights_only=True)`` returns the tensor.

The official format (``scripts/extract_kps_sequence_and_audio.py``): a ``torch.save``d Python list of numpy
float32 (3, 2) arrays. It is read with a restricted unpickler (:mod:`vexpress.utils.safe_load`), never with
``weights_only=False``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vexpress.errors import InputError
from vexpress.utils.io import atomic_path
from vexpress.utils.safe_load import safe_torch_load

#: Driving keypoints are stored in this square frame size (the official script resizes frames to 512x512).
KPS_FRAME_SIZE = 512


def as_kps_tensor(obj: Any, what: str = "keypoints") -> torch.Tensor:
    """Validate and convert a (T, 3, 2) array / tensor / list of (3, 2) arrays to a float32 tensor."""
    if isinstance(obj, dict):
        for key in ("kps", "keypoints"):
            if key in obj:
                obj = obj[key]
                break
    if isinstance(obj, (list, tuple)):
        if len(obj) == 0:
            raise InputError(f"{what} is empty; extract keypoints from a video with at least one face frame")
        try:
            obj = np.stack([np.asarray(o, dtype=np.float32) for o in obj])
        except ValueError as err:
            raise InputError(f"{what}: entries do not all have the same shape ({err}); expected (3, 2) each") from err
    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(np.ascontiguousarray(obj))
    if not isinstance(obj, torch.Tensor):
        raise InputError(f"{what} holds a {type(obj).__name__}; expected a (T, 3, 2) keypoint tensor")
    kps = obj.detach().float().cpu()
    if kps.ndim == 3 and kps.shape[1] == 5 and kps.shape[2] == 2:  # full insightface 5-point set
        kps = kps[:, :3]
    if kps.ndim != 3 or tuple(kps.shape[1:]) != (3, 2) or kps.shape[0] < 1:
        raise InputError(f"{what} has shape {tuple(kps.shape)}; expected (T, 3, 2) [left eye, right eye, nose] x "
                         "(x, y)")
    if not torch.isfinite(kps).all():
        raise InputError(f"{what} contains NaN or infinite values; re-extract the keypoints")
    return kps.contiguous()


def load_official_kps(path: str | os.PathLike) -> torch.Tensor:
    """Read an official ``kps.pth`` (pickled list of numpy (3, 2) arrays) safely -> (T, 3, 2) float32 tensor."""
    return as_kps_tensor(safe_torch_load(path, "keypoint file"), f"keypoint file {path}")


def load_kps(path: str | os.PathLike) -> torch.Tensor:
    """Read a keypoint sequence in our format or the official one -> (T, 3, 2) float32 tensor."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"keypoint file not found: {path} (extract one with vexpress-extract-kps video=... "
                         "output=...)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not our format: try the official pickled list with the allow-list
        return load_official_kps(path)
    return as_kps_tensor(obj, f"keypoint file {path}")


def save_kps(path: str | os.PathLike, kps: Any) -> Path:
    """Atomically write a (T, 3, 2) float32 keypoint tensor loadable with ``torch.load(weights_only=True)``."""
    tensor = as_kps_tensor(kps, "keypoints to save")
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(tensor, tmp)
    return path


def rescale_kps(kps: torch.Tensor, from_size: tuple[int, int], to_size: tuple[int, int]) -> torch.Tensor:
    """Map (..., 3, 2) ``(x, y)`` points from a (W, H) frame to another (W, H) frame (independent x/y scales)."""
    sx = to_size[0] / float(from_size[0])
    sy = to_size[1] / float(from_size[1])
    return kps * torch.tensor([sx, sy], dtype=kps.dtype)
