"""Identity preservation: ArcFace cosine when a local model is given, a landmark-shape proxy otherwise.

- ``face_sim`` (FaceSim / CSIM): mean over frames of ``cos(e(frame_t), e(reference image))`` with embeddings from
  an ArcFace-compatible **TorchScript** module (``(N, 3, 112, 112)`` RGB in [-1, 1] -> ``(N, D)``). Faces are
  aligned with a similarity transform of 5 mediapipe points (iris centres 468/473, nose tip 1, mouth corners
  61/291) onto the standard 112x112 ArcFace template, so values are close to, but not identical with,
  insightface-aligned numbers. ``delta_face_sim`` (V-Express' ΔFaceSim) = ``|face_sim(gen) - face_sim(gt)|``.
- ``id_proxy_shape_err`` (**proxy**, lower is better, no weights): after a similarity alignment of the stable
  landmarks (nose, eye corners, upper face outline, brows) of each frame onto the reference image's, the mean
  residual in percent of the inter-ocular distance. It measures face *geometry* drift only, not appearance, and
  is not comparable with any embedding similarity.
"""

from __future__ import annotations

import os
from typing import Dict, Union

import numpy as np
import torch
from torch import Tensor

from vexpress.errors import ShapeError, WeightsError
from vexpress.metrics.landmarks import EYE_OUTER_L, EYE_OUTER_R, STABLE_INDICES, similarity_align
from vexpress.metrics.weights import WEIGHT_SOURCES, require_file

#: insightface's 112x112 ArcFace template (left-in-image eye, right-in-image eye, nose, mouth corners).
ARCFACE_TEMPLATE = np.array([
    [38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041],
], dtype=np.float64)
#: mediapipe indices giving the same 5 points (needs the 478-point refined mesh for the iris centres).
FIVE_POINT_INDICES = np.array([468, 473, 1, 61, 291])
BROW_INDICES = np.array([46, 52, 53, 55, 63, 65, 66, 70, 105, 107, 276, 282, 283, 285, 293, 295, 296, 300, 334, 336])
PROXY_INDICES = np.concatenate([STABLE_INDICES, BROW_INDICES])


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """ArcFace-order 5 points (5, 2) from 478 mediapipe landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape[0] < 478:
        raise ShapeError(f"identity alignment needs the 478-point refined mesh; got {lm.shape[0]} points")
    return lm[FIVE_POINT_INDICES]


def align_face(frame_rgb: np.ndarray, points5: np.ndarray, size: int = 112) -> np.ndarray:
    """Similarity-warp one RGB frame so ``points5`` land on the ArcFace template; ``(size, size, 3)`` uint8."""
    import cv2

    template = ARCFACE_TEMPLATE * (size / 112.0)
    s, r, t = similarity_align(np.asarray(points5, dtype=np.float64), template)
    mat = np.concatenate([s * r, t[:, None]], axis=1)
    return cv2.warpAffine(np.ascontiguousarray(frame_rgb), mat, (size, size), borderValue=0)


class ArcFaceEmbedder:
    """Embeddings from a local ArcFace-compatible TorchScript module (never downloads)."""

    def __init__(self, path: Union[str, os.PathLike], batch_size: int = 32, device: str = "cpu"):
        p = require_file(path, "ArcFace", "metrics.identity.arcface_path", WEIGHT_SOURCES["arcface"])
        try:
            self.model = torch.jit.load(str(p), map_location=device).eval()
        except Exception as err:  # noqa: BLE001
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise WeightsError(
                f"cannot load ArcFace model {p}: {first} (export your model with torch.jit.script/trace first)"
            ) from err
        self.batch_size = batch_size
        self.device = device

    @torch.no_grad()
    def __call__(self, faces_rgb: np.ndarray) -> Tensor:
        """``(N, 112, 112, 3)`` uint8 aligned faces -> ``(N, D)`` L2-normalised float32 embeddings."""
        x = torch.from_numpy(np.ascontiguousarray(faces_rgb)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        out = [self.model(x[i: i + self.batch_size].to(self.device)).float().cpu()
               for i in range(0, len(x), self.batch_size)]
        emb = torch.cat(out)
        return torch.nn.functional.normalize(emb, dim=-1)


def face_similarity(embedder: ArcFaceEmbedder, frames_rgb: np.ndarray, landmarks: np.ndarray,
                    ref_rgb: np.ndarray, ref_landmarks: np.ndarray) -> Dict[str, float]:
    """Mean cosine between each frame's face and the reference face; frames with NaN landmarks are skipped."""
    ok = [i for i in range(len(frames_rgb)) if np.isfinite(landmarks[i]).all()]
    if not ok or not np.isfinite(ref_landmarks).all():
        return {"face_sim": float("nan"), "face_sim_frames": 0}
    faces = np.stack([align_face(frames_rgb[i], five_points(landmarks[i])) for i in ok])
    ref = align_face(ref_rgb, five_points(ref_landmarks))[None]
    emb = embedder(faces)
    ref_emb = embedder(ref)[0]
    return {"face_sim": float((emb @ ref_emb).mean()), "face_sim_frames": len(ok)}


def identity_shape_error(landmarks: np.ndarray, ref_landmarks: np.ndarray) -> Dict[str, float]:
    """Landmark-geometry identity proxy (percent of inter-ocular distance; lower is better)."""
    ref = np.asarray(ref_landmarks, dtype=np.float64)
    if not np.isfinite(ref).all():
        return {"id_proxy_shape_err": float("nan"), "id_proxy_frames": 0}
    iod = max(float(np.linalg.norm(ref[EYE_OUTER_R] - ref[EYE_OUTER_L])), 1e-6)
    errs = []
    for lm in np.asarray(landmarks, dtype=np.float64):
        if not np.isfinite(lm).all():
            continue
        src, dst = lm[PROXY_INDICES], ref[PROXY_INDICES]
        s, r, t = similarity_align(src, dst)
        mapped = (s * (r @ src.T)).T + t
        errs.append(100.0 * np.linalg.norm(mapped - dst, axis=-1).mean() / iod)
    return {"id_proxy_shape_err": float(np.mean(errs)) if errs else float("nan"), "id_proxy_frames": len(errs)}
