"""How close our V-Kps points are to the official insightface ones, and how the mesh weights were fitted.

The official driving keypoints (``kps.pth``) are insightface ``kps[:3]`` on frames resized to 512x512.
:func:`compare_with_official` runs our extractor on the same frames and reports the mean distance per clip and
per point. :func:`fit_kps_weights` re-derives ``vexpress.preprocessing.face.KPS_WEIGHTS`` (ridge least squares
of each official point on nearby mesh landmarks, as offsets from an anchor landmark so the weights sum to one).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

POINTS = ("left_eye", "right_eye", "nose")

#: Mesh landmarks each point is fitted on (the first one is the anchor).
FIT_LANDMARKS: tuple[tuple[int, ...], ...] = (
    (468, 469, 470, 471, 472, 33, 133, 159, 145, 7, 163, 144, 153, 154, 155, 173, 157, 158, 160, 161, 246),
    (473, 474, 475, 476, 477, 362, 263, 386, 374, 249, 390, 373, 380, 381, 382, 398, 384, 385, 387, 388, 466),
    (1, 4, 5, 2, 19, 94, 195, 197, 6, 98, 327, 45, 275, 44, 274, 220, 440, 48, 278),
)


def mesh_sequence(video: str | os.PathLike, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(T, 478, 2) mesh landmarks of the largest face on frames resized to ``size`` x ``size`` (video mode) and
    the (T,) validity flags."""
    from vexpress.data.video import iter_frames
    from vexpress.preprocessing.face import FaceAnalyzer

    out, ok = [], []
    with FaceAnalyzer(mode="video") as fa:
        for frame in iter_frames(video, size=(size, size)):
            faces = [f for f in fa(frame) if f.landmarks is not None]
            out.append(faces[0].landmarks if faces else np.full((478, 2), np.nan, np.float32))
            ok.append(bool(faces))
    return np.stack(out), np.asarray(ok)


def compare_with_official(clip_dirs: Sequence[str | os.PathLike]) -> dict:
    """Per clip (folder with ``gt.mp4`` + ``kps.pth``) and per point: mean distance (px, 512x512) between
    :func:`vexpress.kps.extract.extract_kps` and the official points; plus the overall means."""
    from vexpress.kps.extract import extract_kps
    from vexpress.kps.io import load_official_kps

    rows = {}
    allerr = []
    for d in clip_dirs:
        d = Path(d)
        ours = extract_kps(d / "gt.mp4").numpy()
        theirs = load_official_kps(d / "kps.pth").numpy()
        t = min(len(ours), len(theirs))
        err = np.linalg.norm(ours[:t] - theirs[:t], axis=-1)  # (T, 3)
        allerr.append(err)
        rows[d.name] = {"frames": int(t), "frames_official": int(len(theirs)), "frames_ours": int(len(ours)),
                        **{p: float(err[:, i].mean()) for i, p in enumerate(POINTS)}, "mean": float(err.mean()),
                        "p95": float(np.percentile(err, 95))}
    cat = np.concatenate(allerr)
    return {"clips": rows, "per_point": {p: float(cat[:, i].mean()) for i, p in enumerate(POINTS)},
            "mean": float(cat.mean())}


def fit_kps_weights(meshes: Sequence[np.ndarray], official: Sequence[np.ndarray], ridge: float = 0.05) -> list[dict]:
    """Least-squares weights (summing to 1) of :data:`FIT_LANDMARKS` for each point; samples are normalised by
    the inter-iris distance so large faces do not dominate."""
    weights = []
    for j, idx in enumerate(FIT_LANDMARKS):
        rows_a, rows_b = [], []
        for lm, k in zip(meshes, official):
            ok = np.isfinite(lm).all(axis=(1, 2))
            lm, k = lm[ok], k[ok]
            ref = lm[:, idx[0]]
            x = lm[:, idx] - ref[:, None]
            s = np.linalg.norm(lm[:, 468] - lm[:, 473], axis=-1)[:, None]
            for ax in range(2):
                rows_a.append(x[:, :, ax] / s)
                rows_b.append((k[:, j, ax] - ref[:, ax]) / s[:, 0])
        a, b = np.concatenate(rows_a), np.concatenate(rows_b)
        w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ b)
        full = {i: 0.0 for i in idx}
        full[idx[0]] += 1.0 - float(w.sum())
        for i, wi in zip(idx, w):
            full[i] += float(wi)
        weights.append({i: round(v, 4) for i, v in full.items()})
    return weights
