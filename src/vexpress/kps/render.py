"""V-Kps images at any output size, drawn as the official ones (shared by training data and generation).

The official drawing (:mod:`vexpress.kps.draw`) uses fixed pixel sizes (circle radius 4, limb half-width 4). By
default (``canvas=None``) the points are drawn directly at the output size, exactly as the generation pipeline
draws them (:mod:`vexpress.pipelines.conditions`), so training and inference see the same images at any size. With
``canvas=C`` they are drawn on a C x C image and the drawing is resized to the output size (area filter):
``canvas=512`` keeps the official 512-px proportions at other sizes. Training and generation must agree on this
(data config key ``kps_canvas``; generation currently draws at the output size, i.e. ``null``).
"""

from __future__ import annotations

import numpy as np
import torch

from vexpress.errors import ShapeError
from vexpress.kps.draw import draw_kps_image

OFFICIAL_CANVAS = 512


def kps_images_uint8(kps: np.ndarray, size: int, canvas: int | None = None) -> np.ndarray:
    """(F, 3, 2) points in output pixels -> (F, size, size, 3) uint8 RGB V-Kps drawings."""
    import cv2

    canvas = int(canvas or size)
    kps = np.asarray(kps, dtype=np.float64)
    if kps.ndim != 3 or kps.shape[1:] != (3, 2):
        raise ShapeError(f"keypoints must be (F, 3, 2), got {kps.shape}")
    out = np.empty((kps.shape[0], size, size, 3), dtype=np.uint8)
    for i, k in enumerate(kps):
        img = draw_kps_image(canvas, canvas, k * (canvas / size))
        out[i] = img if canvas == size else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return out


def draw_kps_images(kps: np.ndarray | torch.Tensor, size: int, canvas: int | None = None) -> torch.Tensor:
    """(F, 3, 2) points in output pixels -> (3, F, size, size) float32 in [0, 1] (the guider's input for a clip)."""
    if isinstance(kps, torch.Tensor):
        kps = kps.detach().cpu().numpy()
    imgs = kps_images_uint8(np.asarray(kps), size, canvas)
    return torch.from_numpy(imgs).permute(3, 0, 1, 2).float().div_(255.0)
