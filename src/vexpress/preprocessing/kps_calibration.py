"""How close our V-Kps points are to the official insightface ones, and how the point definitions were fitted.

The official driving keypoints (``kps.pth``) are insightface ``kps[:3]`` on frames resized to 512x512.
:func:`compare_with_official` runs our extractor on the same frames and reports the mean distance per clip and
per point.

Each of our three points is a small, rigid function of the face mesh (:data:`POINT_MODELS`): an anchor (the mean
of a few landmarks) plus a few coefficients times difference vectors between landmark groups, optionally plus an
offset in the face's own frame (along the line through the outer eye corners and along its normal). Everything is
built from differences of landmarks, so the point moves exactly with the face under translation, rotation and
scale; the coefficients are the only free parameters (2-3 per point, the two eyes share theirs as mirror images).
:func:`fit_point_models` fits them by least squares (every clip weighted equally, residuals in units of the face
size); :func:`leave_one_clip_out` measures how the fit does on a clip it has not seen;
:func:`kps_weight_tables` turns the coefficients into the landmark weight tables stored in
:mod:`vexpress.preprocessing.face`.

Why these definitions (measured leave-one-clip-out on the four official clips with insightface points; see
``docs/data.md`` and ``benchmarks/bench_kps.py``): insightface's eye point sits at a fixed offset from the middle
of the two eye corners, pulled a little toward the nose bridge; mediapipe's iris points follow the gaze and do not
help. Its nose point lies behind mediapipe's nose tip: the tip landmark moved back along the depth direction
(the difference between the middle of the inner eye corners and the nose bridge, which points away from the
camera), so it moves less than the tip when the head turns. The earlier fit of ~20 landmarks per point matched
its own clips to 2.0 px but clips left out of the fit to 2.5 px; these definitions give 2.2 px left out, and 3.0 px
(was 3.2) on the 22 held-out official clips (emo, vasa-1), where the nose is still 3-7 px off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from vexpress.data.video import iter_frames
from vexpress.preprocessing.face import FaceAnalyzer

POINTS = ("left_eye", "right_eye", "nose")

#: Outer eye corners (left-in-image, right-in-image): the face frame's x axis and its size.
FRAME_LANDMARKS: tuple[int, int] = (33, 263)


@dataclass(frozen=True)
class PointModel:
    """One V-Kps point: ``mean(groups[0]) + sum_i c_i (mean(groups[i]) - mean(groups[0]))`` plus, with ``offset``,
    ``c_x * side * u + c_y * rot90(u)`` where ``u`` is the outer-corner vector 33 -> 263 (``side`` = -1 for the
    left-in-image eye so that a positive ``c_x`` points away from the nose on both eyes)."""

    groups: tuple[tuple[int, ...], ...]
    offset: bool = False
    side: int = 1

    @property
    def num_coefficients(self) -> int:
        return len(self.groups) - 1 + (2 if self.offset else 0)


#: The three point definitions; the two eyes are mirror images of each other and share their coefficients.
POINT_MODELS: tuple[PointModel, ...] = (
    PointModel(groups=((33, 133), (168,)), offset=True, side=-1),   # left-in-image eye
    PointModel(groups=((263, 362), (168,)), offset=True, side=1),   # right-in-image eye (mirror)
    PointModel(groups=((4,), (133, 362), (168,)), offset=False),    # nose
)
#: Which points share one coefficient vector.
SHARED: tuple[tuple[int, ...], ...] = ((0, 1), (2,))


def _rot90(v: np.ndarray) -> np.ndarray:
    return np.stack([-v[..., 1], v[..., 0]], axis=-1)


def _design(lm: np.ndarray, model: PointModel) -> tuple[np.ndarray, np.ndarray]:
    """Anchor (T, 2) and regressors (T, 2, K) of ``model`` on mesh landmarks (T, 478, 2)."""
    anchor = lm[:, list(model.groups[0])].mean(1)
    cols = [lm[:, list(g)].mean(1) - anchor for g in model.groups[1:]]
    if model.offset:
        u = lm[:, FRAME_LANDMARKS[1]] - lm[:, FRAME_LANDMARKS[0]]
        cols += [model.side * u, _rot90(u)]
    x = np.stack(cols, -1) if cols else np.zeros(lm.shape[:1] + (2, 0))
    return anchor, x


def _face_size(lm: np.ndarray) -> np.ndarray:
    return np.linalg.norm(lm[:, FRAME_LANDMARKS[1]] - lm[:, FRAME_LANDMARKS[0]], axis=-1)


def fit_point_models(meshes: Sequence[np.ndarray], official: Sequence[np.ndarray],
                     models: Sequence[PointModel] = POINT_MODELS,
                     shared: Sequence[Sequence[int]] = SHARED) -> list[np.ndarray]:
    """Least-squares coefficients of each point model (one array per point, shared points get the same array).

    ``meshes``: per clip (T, 478, 2) landmarks (NaN rows = no face, ignored); ``official``: per clip (T, 3, 2)
    points. Every clip has the same total weight and residuals are divided by the face size, so long clips and
    large faces do not dominate.
    """
    coefs: list[np.ndarray | None] = [None] * len(models)
    for group in shared:
        rows_a, rows_b = [], []
        for lm, k in zip(meshes, official):
            lm = np.asarray(lm, np.float64)
            k = np.asarray(k, np.float64)
            t = min(len(lm), len(k))
            lm, k = lm[:t], k[:t]
            ok = np.isfinite(lm).all(axis=(1, 2)) & np.isfinite(k).all(axis=(1, 2))
            lm, k = lm[ok], k[ok]
            if not len(lm):
                continue
            s = _face_size(lm)[:, None, None]
            w = 1.0 / np.sqrt(len(lm) * len(group))
            for j in group:
                anchor, x = _design(lm, models[j])
                rows_a.append((x / s * w).reshape(-1, x.shape[-1]))
                rows_b.append(((k[:, j] - anchor) / s[:, :, 0] * w).reshape(-1))
        a, b = np.concatenate(rows_a), np.concatenate(rows_b)
        c = np.linalg.lstsq(a, b, rcond=None)[0] if a.shape[1] else np.zeros(0)
        for j in group:
            coefs[j] = c
    return coefs  # type: ignore[return-value]


def predict_points(lm: np.ndarray, coefs: Sequence[np.ndarray],
                   models: Sequence[PointModel] = POINT_MODELS) -> np.ndarray:
    """(T, 478, 2) landmarks -> (T, 3, 2) points of the fitted models."""
    lm = np.asarray(lm, np.float64)
    out = []
    for model, c in zip(models, coefs):
        anchor, x = _design(lm, model)
        out.append(anchor + (x @ c if len(c) else 0.0))
    return np.stack(out, 1)


def kps_weight_tables(coefs: Sequence[np.ndarray], models: Sequence[PointModel] = POINT_MODELS,
                      digits: int = 4) -> tuple[list[dict[int, float]], list[dict[int, float]]]:
    """The fitted models as landmark weights: point = ``sum_n W[n] lm[n] + rot90(sum_n V[n] lm[n])`` with
    ``sum W = 1`` and ``sum V = 0`` (the form :func:`vexpress.preprocessing.face.kps_from_landmarks` evaluates)."""
    ws, vs = [], []
    for model, c in zip(models, coefs):
        w: dict[int, float] = {}
        v: dict[int, float] = {}

        def add(table, idx, val):
            table[idx] = table.get(idx, 0.0) + val

        g0 = model.groups[0]
        rest = 1.0 - float(sum(c[:len(model.groups) - 1]))
        for i in g0:
            add(w, i, rest / len(g0))
        for g, ci in zip(model.groups[1:], c):
            for i in g:
                add(w, i, float(ci) / len(g))
        if model.offset:
            cx, cy = float(c[-2]), float(c[-1])
            a, b = FRAME_LANDMARKS
            add(w, a, -model.side * cx)
            add(w, b, model.side * cx)
            add(v, a, -cy)
            add(v, b, cy)
        ws.append({i: round(x, digits) for i, x in sorted(w.items()) if round(x, digits) != 0.0})
        vs.append({i: round(x, digits) for i, x in sorted(v.items()) if round(x, digits) != 0.0})
    return ws, vs


def point_errors(ours: np.ndarray, official: np.ndarray) -> np.ndarray:
    """(T, 3) distances (px) over the common frames."""
    t = min(len(ours), len(official))
    return np.linalg.norm(np.asarray(ours[:t], np.float64) - np.asarray(official[:t], np.float64), axis=-1)


def leave_one_clip_out(meshes: Mapping[str, np.ndarray], official: Mapping[str, np.ndarray],
                       models: Sequence[PointModel] = POINT_MODELS,
                       shared: Sequence[Sequence[int]] = SHARED) -> dict[str, np.ndarray]:
    """For each clip: fit on all the other clips, predict this one; returns its (T, 3) distances (px)."""
    out = {}
    for name in meshes:
        others = [n for n in meshes if n != name]
        coefs = fit_point_models([meshes[n] for n in others], [official[n] for n in others], models, shared)
        out[name] = point_errors(predict_points(meshes[name], coefs, models), official[name])
    return out


def summarize(errors: Mapping[str, np.ndarray]) -> dict:
    """Per clip and per point means of (T, 3) distance arrays, the mean over clips and over all frames."""
    rows = {n: {**{p: float(e[:, i].mean()) for i, p in enumerate(POINTS)}, "mean": float(e.mean()),
                "frames": int(len(e))} for n, e in errors.items()}
    cat = np.concatenate(list(errors.values()))
    return {"clips": rows,
            "per_point": {p: float(cat[:, i].mean()) for i, p in enumerate(POINTS)},
            "mean": float(cat.mean()),
            "mean_of_clips": float(np.mean([r["mean"] for r in rows.values()]))}


def mesh_sequence(video: str | os.PathLike, size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(T, 478, 2) mesh landmarks of the largest face on frames resized to ``size`` x ``size`` (video mode, as
    :func:`vexpress.preprocessing.kps_extract.extract_kps`) and the (T,) validity flags."""
    out, ok = [], []
    with FaceAnalyzer(mode="video", max_faces=2) as fa:
        for frame in iter_frames(video, size=(size, size)):
            faces = [f for f in fa(frame) if f.landmarks is not None]
            out.append(faces[0].landmarks if faces else np.full((478, 2), np.nan, np.float32))
            ok.append(bool(faces))
    return np.stack(out), np.asarray(ok)


def compare_with_official(clip_dirs: Sequence[str | os.PathLike]) -> dict:
    """Per clip (folder with ``gt.mp4`` + ``kps.pth``) and per point: mean distance (px, 512x512) between
    :func:`vexpress.preprocessing.kps_extract.extract_kps` and the official points; plus the overall means."""
    from vexpress.kps.io import load_official_kps  # torch: imported when needed
    from vexpress.preprocessing.kps_extract import extract_kps

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
