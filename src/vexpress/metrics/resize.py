"""Image resizers used by the feature-based metrics (part of each metric's protocol).

- ``"tf1"``: TensorFlow 1.x ``resize_bilinear(align_corners=False)``: source coordinate ``dst * in/out`` (no
  half-pixel offset), no antialias. The original TF FID/FVD code resizes this way; torch-fidelity reproduces it.
- ``"bilinear"``: ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` (half-pixel centres).
- ``"bilinear_antialias"``: the same with ``antialias=True`` (torchmetrics' FID default since 1.8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

RESIZE_MODES = ("tf1", "bilinear", "bilinear_antialias")


def _tf1_axis(in_size: int, out_size: int, device, dtype):
    pos = torch.arange(out_size, device=device, dtype=torch.float64) * (in_size / out_size)
    lo = pos.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = (pos - lo.double()).to(dtype)
    return lo, hi, frac


def resize_tf1_bilinear(x: Tensor, size: tuple[int, int]) -> Tensor:
    """TF1-style bilinear resize of ``(N, C, H, W)`` float images to ``size = (h, w)``."""
    if x.shape[-2:] == tuple(size):
        return x
    h_lo, h_hi, h_frac = _tf1_axis(x.shape[-2], size[0], x.device, x.dtype)
    w_lo, w_hi, w_frac = _tf1_axis(x.shape[-1], size[1], x.device, x.dtype)
    top = x[..., h_lo, :]
    bottom = x[..., h_hi, :]
    rows = top + (bottom - top) * h_frac.view(-1, 1)
    left = rows[..., w_lo]
    right = rows[..., w_hi]
    return left + (right - left) * w_frac


def resize_images(x: Tensor, size: tuple[int, int], mode: str = "tf1") -> Tensor:
    """Resize ``(N, C, H, W)`` float images with one of :data:`RESIZE_MODES`."""
    size = (int(size[0]), int(size[1]))
    if mode == "tf1":
        return resize_tf1_bilinear(x, size)
    if mode in ("bilinear", "bilinear_antialias"):
        if x.shape[-2:] == size:
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=mode.endswith("antialias"))
    raise ValueError(f"unknown resize mode {mode!r}; use one of {RESIZE_MODES}")


def to_uint8_range(x: Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """Map float images in ``value_range`` (or uint8) to float values in [0, 255] (rounded, clamped)."""
    if x.dtype == torch.uint8:
        return x.float()
    lo, hi = value_range
    y = (x.float() - lo) * (255.0 / (hi - lo))
    return y.clamp(0, 255).round()
