"""V-Kps images at any output size, drawn as the official ones (shared by training data and generation).

The official drawing (:mod:`vexpress.kps.draw`) uses fixed pixel sizes (circle radius 4, limb half-width 4) on
512x512 frames. To keep the *same look* at another image size, the points are drawn on a ``canvas`` x ``canvas``
image and the drawing is resized to the output size (area filter). ``canvas=512`` reproduces the official proportions
at every size (at 512 it is exactly the official drawing). Small models on small frames may prefer a smaller canvas
(e.g. 128 for 64x64 frames: radius-2 dots instead of half-pixel ones) -- training and generation must then use the
same value (the data config key ``kps_canvas``).
"""

from __future__ import annotations

import numpy as np
import torch

from vexpress.errors import ShapeError

OFFICIAL_CANVAS = 512


def kps_images_uint8(kps: np.ndarray, size: int, canvas: int = OFFICIAL_CANVAS) -> np.ndarray:
    """(F, 3, 2) points in output pixels -> (F, size, size, 3) uint8 RGB V-Kps drawings."""
    import cv2

    from vexpress.kps.draw import draw_kps_image

    kps = np.asarray(kps, dtype=np.float64)
    if kps.ndim != 3 or kps.shape[1:] != (3, 2):
        raise ShapeError(f"keypoints must be (F, 3, 2), got {kps.shape}")
    out = np.empty((kps.shape[0], size, size, 3), dtype=np.uint8)
    for i, k in enumerate(kps):
        img = draw_kps_image(canvas, canvas, k * (canvas / size))
        out[i] = img if canvas == size else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return out


def draw_kps_images(kps: np.ndarray | torch.Tensor, size: int, canvas: int = OFFICIAL_CANVAS) -> torch.Tensor:
    """(F, 3, 2) points in output pixels -> (3, F, size, size) float32 in [0, 1] (the guider's input for a clip)."""
    if isinstance(kps, torch.Tensor):
        kps = kps.detach().cpu().numpy()
    imgs = kps_images_uint8(np.asarray(kps), size, canvas)
    return torch.from_numpy(imgs).permute(3, 0, 1, 2).float().div_(255.0)
