"""V-Kps images: the "V" drawing of three face keypoints that the V-Kps guider sees (spec §3.3 step 4).

Pixel-exact with the official ``datasets/utils.draw_kps_image`` (OpenCV): on a black canvas, two filled ellipses
(limbs eye0->nose and eye1->nose, semi-axes (length/2, 4) px, colour 0.6x the eye's colour), then filled circles of
radius 4 at eye0 (red), eye1 (green) and the nose (blue). Channel 0 = red = eye0 (left-in-image eye),
channel 1 = green = eye1, channel 2 = blue = nose. Coordinates are ``(x, y)`` = (column, row) pixels.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from vexpress.errors import ShapeError

COLORS: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255))
LIMBS: tuple[tuple[int, int], ...] = ((0, 2), (1, 2))
STICK_WIDTH = 4
RADIUS = 4


def draw_kps_image(height: int, width: int, kps: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Draw one V-Kps image: (height, width, 3) uint8 RGB from (3, 2) keypoints ``[eye0, eye1, nose]``."""
    import cv2

    kps = np.asarray(kps, dtype=np.float32)
    if kps.shape != (3, 2):
        raise ShapeError(f"V-Kps keypoints must be (3, 2) [eye0, eye1, nose] x (x, y), got {kps.shape}")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for i, j in LIMBS:
        x = kps[[i, j], 0]
        y = kps[[i, j], 1]
        length = float(((x[0] - x[1]) ** 2 + (y[0] - y[1]) ** 2) ** 0.5)
        angle = int(math.degrees(math.atan2(float(y[0] - y[1]), float(x[0] - x[1]))))
        center = (int(np.mean(x)), int(np.mean(y)))
        polygon = cv2.ellipse2Poly(center, (int(length / 2), STICK_WIDTH), angle, 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, [int(float(c) * 0.6) for c in COLORS[i]])
    for idx, (x, y) in enumerate(kps):
        cv2.circle(canvas, (int(x), int(y)), RADIUS, COLORS[idx], -1)
    return canvas


def draw_kps_sequence(height: int, width: int, kps: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, 3, 2) keypoints -> (3, T, H, W) float32 V-Kps images in [0, 1], the guider's input for one clip."""
    kps = kps.detach().cpu().numpy() if isinstance(kps, torch.Tensor) else np.asarray(kps)
    if kps.ndim != 3 or kps.shape[1:] != (3, 2):
        raise ShapeError(f"keypoint sequence must be (T, 3, 2), got {kps.shape}")
    frames = np.stack([draw_kps_image(height, width, k) for k in kps])  # (T, H, W, 3)
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float().div_(255.0)


def flip_kps_image_channels(images: torch.Tensor, channel_dim: int = 0) -> torch.Tensor:
    """After a horizontal flip, swap the red and green channels so the left-in-image eye stays red (official)."""
    idx = torch.tensor([1, 0, 2], device=images.device)
    return images.index_select(channel_dim, idx)
