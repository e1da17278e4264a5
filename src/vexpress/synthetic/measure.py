"""Measure mouth shape, head pose / V-Kps points and appearance back from synthetic-benchmark frames.

Made for *generated* frames: every estimate integrates over many pixels, so it tolerates the blur, noise and
colour shifts of a small diffusion model's output.

- **Pose** (:func:`fit_pose`): analysis by synthesis. The clip's identity (from its record) is re-rendered with the
  mouth hidden and the pose ``(cx, cy, s, roll)`` is refined by damped Gauss-Newton on the pixel difference of
  lightly blurred images, starting from a given pose (the conditioning keypoints, or the previous frame). The
  V-Kps points follow exactly from the pose (:func:`vexpress.synthetic.face.kps_from_pose`).
- **Mouth** (:func:`measure_mouth`): the frame is resampled in face coordinates around the mouth; each sample's
  *interior fraction* ``alpha`` (0 = lips/skin, 1 = the blue mouth interior) is read from its colour. Blur moves
  colour around but keeps sums, so ``opening`` comes from the interior's vertical chord at the mouth centre
  (sum of alpha along central columns = 2 * semi-axis) and ``width`` from the interior area / (pi * semi-axis);
  both then invert the renderer's mapping. ``width`` is NaN when the mouth is (nearly) closed.
- **Appearance** (:func:`appearance_descriptor`): mean colours of fixed face-coordinate regions (background,
  hair, skin of cheeks and chin, shirt), a 12-d vector in [0, 1]; compare two frames with
  :func:`appearance_distance`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from vexpress.errors import InputError
from vexpress.synthetic.face import (
    LIP_X,
    LIP_Y,
    MOUTH_AX0,
    MOUTH_AX1,
    MOUTH_AY1,
    MOUTH_INTERIOR,
    MOUTH_Y,
    Identity,
    kps_from_pose,
    render_background,
    render_frame,
)

#: Face-coordinate sample points of the appearance regions (each region = mean colour over its points).
APPEARANCE_REGIONS: dict[str, tuple[tuple[float, float], ...]] = {
    "background": ((-1.3, -1.0), (1.3, -1.0), (-1.35, -0.6), (1.35, -0.6)),
    "hair": ((0.0, -1.0), (-0.3, -0.92), (0.3, -0.92)),
    "skin": ((-0.42, 0.32), (0.42, 0.32), (0.0, 0.86), (-0.2, 0.1), (0.2, 0.1)),
    "shirt": ((-0.75, 1.5), (0.75, 1.5), (-1.0, 1.6), (1.0, 1.6)),
}


def identity_of(record: Any) -> Identity:
    """The :class:`Identity` of a synthetic clip record (``record.extra['synthetic']['identity']``) or dict."""
    extra = record.extra if hasattr(record, "extra") else record
    try:
        return Identity.from_dict(extra["synthetic"]["identity"])
    except (KeyError, TypeError) as err:
        raise InputError(f"clip {getattr(record, 'id', '?')} is not a synthetic clip (no identity parameters); "
                         "measurement needs a vexpress-synth record") from err


def _as_float_frame(frame: np.ndarray) -> np.ndarray:
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise InputError(f"frame must be (H, W, 3) RGB, got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    arr = arr.astype(np.float32)
    if arr.min() < -0.01:  # [-1, 1]
        return (arr + 1.0) * 127.5
    if arr.max() <= 1.0:  # [0, 1]
        return arr * 255.0
    return arr


def _sample(img: np.ndarray, pose: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` at face coordinates (xs, ys) (same shapes) -> (..., 3)."""
    import cv2

    cx, cy, s, roll = (float(v) for v in pose)
    c, sn = math.cos(roll), math.sin(roll)
    px = cx + s * (c * xs - sn * ys) - 0.5
    py = cy + s * (sn * xs + c * ys) - 0.5
    return cv2.remap(img, px.astype(np.float32), py.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def _blue_excess(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 2] - np.maximum(rgb[..., 0], rgb[..., 1])


def interior_alpha(rgb: np.ndarray, identity: Identity | None = None) -> np.ndarray:
    """Per-pixel fraction of mouth interior (0..1) from colour: the interior is the only strongly blue region."""
    hi = float(_blue_excess(np.array(MOUTH_INTERIOR, dtype=np.float32)))
    if identity is not None:
        lo = max(float(_blue_excess(np.array(identity.lips, np.float32))),
                 float(_blue_excess(np.array(identity.skin, np.float32)))) + 15.0
    else:
        lo = -20.0
    lo = min(lo, hi * 0.4)
    return np.clip((_blue_excess(rgb) - lo) / (hi - lo), 0.0, 1.0)


def measure_mouth(frame: np.ndarray, pose: np.ndarray, identity: Identity | None = None,
                  step: float = 0.01) -> tuple[float, float]:
    """(opening, width) of the mouth in renderer units ([0, 1] for the GT range; width NaN when closed).

    ``pose`` = (cx, cy, s, roll) of the head in this frame's pixels (fitted or ground truth).
    """
    img = _as_float_frame(frame)
    pose = np.asarray(pose, dtype=np.float64)
    half_w = MOUTH_AX0 + MOUTH_AX1 + LIP_X + 0.08
    half_h = MOUTH_AY1 + LIP_Y + 0.08
    xs1 = np.arange(-half_w, half_w + 1e-9, step)
    ys1 = np.arange(-half_h, half_h + 1e-9, step)
    xs, ys = np.meshgrid(xs1, ys1 + MOUTH_Y)
    alpha = interior_alpha(_sample(img, pose, xs, ys), identity)
    # only the mouth ellipse region (+ margin) counts: excludes nostrils/chin shading far away
    inside = (xs / half_w) ** 2 + ((ys - MOUTH_Y) / half_h) ** 2 <= 1.0
    alpha = alpha * inside
    central = np.abs(xs1) <= 0.06
    chord = float(alpha[:, central].sum(0).mean()) * step  # = 2 * ay
    ay = chord / 2.0
    area = float(alpha.sum()) * step * step  # = pi * ax * ay
    opening = ay / MOUTH_AY1
    if ay < 0.02:  # closed or almost: the width of a slit is not measurable
        return max(0.0, opening), float("nan")
    ax = area / (math.pi * ay)
    return max(0.0, opening), (ax - MOUTH_AX0) / MOUTH_AX1


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0 else img


def fit_pose(frame: np.ndarray, identity: Identity, init_pose: np.ndarray, mouth: tuple[float, float] | None = None,
             iterations: int = 12, sigma: float = 1.0, supersample: int = 2) -> tuple[np.ndarray, float]:
    """Refine the head pose of ``frame`` from ``init_pose`` by analysis by synthesis.

    Returns ``(pose (4,), rms)``: the fitted [cx, cy, s, roll] and the RMS pixel residual (0..255 scale) outside the
    mouth. The mouth area is excluded from the comparison (the generated mouth may differ from any guess).
    """
    img = _as_float_frame(frame)
    h, w = img.shape[:2]
    if h != w:
        raise InputError(f"synthetic frames are square; got {w}x{h}")
    size = h
    target = _blur(img, sigma)
    bg = render_background(identity, size, supersample)
    pose = np.asarray(init_pose, dtype=np.float64).copy()
    steps = np.array([0.35, 0.35, 0.35, 0.012])

    def residual(p: np.ndarray) -> np.ndarray:
        r = render_frame(identity, p, (0.0, 0.5), size, supersample, bg, draw_mouth=False).astype(np.float32)
        diff = _blur(r, sigma) - target
        diff = diff * _mouth_mask(p, size)[..., None]
        return diff.reshape(-1)

    r0 = residual(pose)
    cost = float(r0 @ r0)
    lam = 1e-2
    for _ in range(iterations):
        jac = np.empty((r0.size, 4), dtype=np.float64)
        for k in range(4):
            dp = np.zeros(4)
            dp[k] = steps[k]
            jac[:, k] = (residual(pose + dp) - residual(pose - dp)) / (2 * steps[k])
        jtj = jac.T @ jac
        g = jac.T @ r0
        improved = False
        for _ in range(4):
            delta = -np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-6), g)
            delta = np.clip(delta, [-3, -3, -3, -0.1], [3, 3, 3, 0.1])
            cand = pose + delta
            rc = residual(cand)
            cc = float(rc @ rc)
            if cc < cost:
                pose, r0, cost = cand, rc, cc
                lam = max(lam / 3, 1e-4)
                improved = True
                break
            lam *= 4
        if not improved or np.all(np.abs(delta) < [0.02, 0.02, 0.02, 0.0005]):
            break
    valid = _mouth_mask(pose, size).sum() * 3
    return pose, math.sqrt(cost / max(1.0, valid))


def _mouth_mask(pose: np.ndarray, size: int) -> np.ndarray:
    """1 outside the (maximal) mouth ellipse, 0 inside (image pixels)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    cx, cy, s, roll = pose
    c, sn = math.cos(roll), math.sin(roll)
    dx, dy = xx - cx, yy - cy
    u = (c * dx + sn * dy) / s
    v = (-sn * dx + c * dy) / s
    a = MOUTH_AX0 + MOUTH_AX1 + LIP_X + 0.1
    b = MOUTH_AY1 + LIP_Y + 0.1
    return (((u / a) ** 2 + ((v - MOUTH_Y) / b) ** 2) > 1.0).astype(np.float32)


def appearance_descriptor(frame: np.ndarray, pose: np.ndarray, patch: float = 0.06) -> np.ndarray:
    """12-d appearance vector in [0, 1]: mean RGB of background, hair, skin and shirt regions (face coordinates).

    Points that fall outside the frame are ignored; a region with no point inside gives NaN.
    """
    img = _as_float_frame(frame)
    h, w = img.shape[:2]
    pose = np.asarray(pose, dtype=np.float64)
    cx, cy, s, roll = pose
    c, sn = math.cos(roll), math.sin(roll)
    offs = np.array([(dx, dy) for dx in (-patch, 0, patch) for dy in (-patch, 0, patch)])
    out = []
    for pts in APPEARANCE_REGIONS.values():
        cols = []
        for x, y in pts:
            xy = np.array([x, y]) + offs
            px = cx + s * (c * xy[:, 0] - sn * xy[:, 1])
            py = cy + s * (sn * xy[:, 0] + c * xy[:, 1])
            ok = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)
            if ok.any():
                cols.append(_sample(img, np.array([0.0, 0.0, 1.0, 0.0]), (px[ok] + 0.5)[None],
                                    (py[ok] + 0.5)[None])[0])
        out.append(np.concatenate(cols).mean(0) / 255.0 if cols else np.full(3, np.nan))
    return np.concatenate(out).astype(np.float32)


def appearance_distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS difference of two appearance descriptors over the regions both have (0 = same colours)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.sqrt(np.mean((a[ok] - b[ok]) ** 2))) if ok.any() else float("nan")


def scale_pose(pose: np.ndarray, factor: float) -> np.ndarray:
    """Pose(s) in a frame ``factor`` times larger (centre and scale scale, roll does not)."""
    p = np.array(pose, dtype=np.float64, copy=True)
    p[..., :3] *= factor
    return p


def measure_frame(frame: np.ndarray, record: Any, index: int, init_pose: np.ndarray | None = None,
                  fit: bool = True) -> dict[str, Any]:
    """All measurements of one frame of a synthetic clip.

    Args:
        frame: (H, W, 3) RGB (uint8, or float in [0, 1] / [-1, 1]); any square size (poses are rescaled).
        record: the clip's :class:`~vexpress.data.records.ClipRecord` (identity and ground-truth pose).
        index: frame number in the clip (for the ground-truth pose used as the starting point).
        init_pose: starting pose in this frame's pixels (default: the ground truth of frame ``index``).
        fit: refine the pose (False: measure the mouth and appearance at the starting pose).

    Returns a dict with ``pose`` (4,), ``kps`` (3, 2), ``opening``, ``width``, ``appearance`` (12,), ``rms``, and
    the ground truth ``gt_pose``, ``gt_kps``, ``gt_mouth`` of that frame in this frame's pixels.
    """
    identity = identity_of(record)
    factor = float(np.asarray(frame).shape[0]) / float(record.height)
    gt_pose = scale_pose(record.gt_pose[index].numpy(), factor)
    start = gt_pose if init_pose is None else np.asarray(init_pose, dtype=np.float64)
    if fit:
        pose, rms = fit_pose(frame, identity, start)
    else:
        pose, rms = start, float("nan")
    opening, width = measure_mouth(frame, pose, identity)
    return {"pose": pose, "kps": kps_from_pose(pose), "opening": opening, "width": width,
            "appearance": appearance_descriptor(frame, pose), "rms": rms, "gt_pose": gt_pose,
            "gt_kps": kps_from_pose(gt_pose), "gt_mouth": record.gt_mouth[index].numpy()}


def measure_clip(frames: np.ndarray, record: Any, indices: Any = None, fit: bool = True) -> dict[str, np.ndarray]:
    """:func:`measure_frame` over frames (T, H, W, 3); ``indices`` = their frame numbers in the record (default
    0..T-1). Returns stacked arrays: ``pose (T,4) kps (T,3,2) mouth (T,2) appearance (T,12) rms (T,)`` and the
    ground truth ``gt_pose gt_kps gt_mouth``."""
    frames = np.asarray(frames)
    idx = list(range(frames.shape[0])) if indices is None else [int(i) for i in indices]
    if len(idx) != frames.shape[0]:
        raise InputError(f"{frames.shape[0]} frames but {len(idx)} indices")
    rows = [measure_frame(frames[k], record, i, fit=fit) for k, i in enumerate(idx)]
    return {
        "pose": np.stack([r["pose"] for r in rows]), "kps": np.stack([r["kps"] for r in rows]),
        "mouth": np.array([[r["opening"], r["width"]] for r in rows], dtype=np.float32),
        "appearance": np.stack([r["appearance"] for r in rows]), "rms": np.array([r["rms"] for r in rows]),
        "gt_pose": np.stack([r["gt_pose"] for r in rows]), "gt_kps": np.stack([r["gt_kps"] for r in rows]),
        "gt_mouth": np.stack([r["gt_mouth"] for r in rows]),
    }


def summarize(measured: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Clip-level errors from :func:`measure_clip`: mouth opening MAE and correlation, width MAE (open frames),
    kps mean distance (px), appearance drift from the first frame."""
    m, g = measured["mouth"], measured["gt_mouth"]
    op, gop = m[:, 0], g[:, 0]
    corr = float(np.corrcoef(op, gop)[0, 1]) if op.std() > 1e-6 and gop.std() > 1e-6 else float("nan")
    wmask = np.isfinite(m[:, 1]) & (g[:, 0] > 0.15)
    kd = np.linalg.norm(measured["kps"] - measured["gt_kps"], axis=-1)
    app = measured["appearance"]
    drift = [appearance_distance(app[0], a) for a in app]
    return {"opening_mae": float(np.abs(op - gop).mean()), "opening_corr": corr,
            "width_mae": float(np.abs(m[wmask, 1] - g[wmask, 1]).mean()) if wmask.any() else float("nan"),
            "kps_px": float(kd.mean()), "appearance_drift": float(np.nanmean(drift))}
