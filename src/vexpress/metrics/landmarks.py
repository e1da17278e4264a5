"""Weight-free face metrics on mediapipe landmarks: KpsDis, LMD and the landmark lip-sync score.

All functions work on arrays, so they are usable with any landmark source; the evaluation job feeds them the
478-point mediapipe face mesh (``vexpress.preprocessing.face.FaceAnalyzer``). Frames without a face are NaN and
are excluded (and counted), never scored as zero.

- **KpsDis** (V-Express pose control): mean L2 distance, in pixels of a 512x512 frame, between the 3 V-Kps points
  (left-in-image eye, right-in-image eye, nose) detected on the generated video and the driving keypoints.
  Our detector is mediapipe, not insightface SCRFD, so values are labelled "mediapipe" and are not comparable
  with SCRFD-based numbers.
- **LMD** (mouth landmark distance): mean L2 distance between the 40 FACEMESH_LIPS points of generated and
  ground-truth frames. ``lmd`` is in pixels of a 512x512 frame; ``lmd_aligned`` first maps each frame's landmarks
  onto the ground truth's with a similarity transform fitted on stable (non-mouth) points and divides by the
  inter-ocular distance, so it measures mouth shape only (x100 for readability: percent of the eye distance).
- **Landmark lip-sync score** (project-defined proxy, not comparable with LSE): mouth opening
  ``|p13 - p14| / |p33 - p263|`` against the audio log-RMS envelope (40 ms windows centred on the frame times),
  both at 25 fps; Pearson correlation for video-vs-audio lags -15..15 frames. Reports ``r0`` (lag 0), ``r_best``,
  ``lag`` (positive: audio leads video, SyncNet's sign) and ``conf = r_best - median(r)``.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

#: The 40 unique indices of mediapipe's FACEMESH_LIPS.
LIP_INDICES = np.array([
    0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269, 270, 291,
    308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415,
])
#: Points that move little with speech: nose, eye corners, upper face oval (for alignment).
STABLE_INDICES = np.array([
    1, 2, 4, 5, 6, 19, 45, 48, 64, 94, 97, 98, 115, 168, 195, 197, 220, 275, 278, 294, 326, 327, 344, 440,
    33, 133, 362, 263, 10, 338, 297, 332, 284, 251, 389, 356, 454, 109, 67, 103, 54, 21, 162, 127, 234,
])
UPPER_LIP, LOWER_LIP = 13, 14
EYE_OUTER_R, EYE_OUTER_L = 33, 263
REFERENCE_SIZE = 512


def _scale_to_reference(points: np.ndarray, frame_size) -> np.ndarray:
    """Scale pixel coordinates of a ``(W, H)`` frame to a 512x512 frame."""
    if frame_size is None:
        return points
    w, h = frame_size
    return points * np.array([REFERENCE_SIZE / w, REFERENCE_SIZE / h])


def kps_distance(pred: np.ndarray, target: np.ndarray, pred_size=None, target_size=None) -> Dict[str, float]:
    """KpsDis between detected ``pred`` (T, 3, 2) and driving ``target`` (T', 3, 2) keypoints.

    Sizes are ``(W, H)`` of the frames the coordinates refer to (``None``: already 512x512). The sequences are
    compared over their common length; frames where ``pred`` is NaN (no face) are excluded.
    """
    pred = _scale_to_reference(np.asarray(pred, dtype=np.float64), pred_size)
    target = _scale_to_reference(np.asarray(target, dtype=np.float64), target_size)
    n = min(len(pred), len(target))
    d = np.linalg.norm(pred[:n] - target[:n], axis=-1).mean(-1)
    ok = np.isfinite(d)
    return {"kps_dis": float(d[ok].mean()) if ok.any() else float("nan"), "kps_frames": int(ok.sum()),
            "kps_missing": int(n - ok.sum())}


def similarity_align(src: np.ndarray, dst: np.ndarray) -> tuple:
    """Least-squares similarity transform (Umeyama) mapping ``src`` (N, 2) onto ``dst`` (N, 2): ``(s, R, t)``."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    var_s = (xs ** 2).sum() / len(src)
    scale = float((sig * np.diag(sign)).sum() / var_s) if var_s > 0 else 1.0
    return scale, rot, mu_d - scale * rot @ mu_s


def landmark_distance(pred: np.ndarray, target: np.ndarray, pred_size=None, target_size=None) -> Dict[str, float]:
    """LMD between generated ``pred`` and ground-truth ``target`` mesh landmarks, (T, 478, 2) each (NaN = no face)."""
    pred = _scale_to_reference(np.asarray(pred, dtype=np.float64), pred_size)
    target = _scale_to_reference(np.asarray(target, dtype=np.float64), target_size)
    n = min(len(pred), len(target))
    raw, aligned = [], []
    for p, g in zip(pred[:n], target[:n]):
        if not (np.isfinite(p).all() and np.isfinite(g).all()):
            continue
        raw.append(np.linalg.norm(p[LIP_INDICES] - g[LIP_INDICES], axis=-1).mean())
        s, r, t = similarity_align(p[STABLE_INDICES], g[STABLE_INDICES])
        mapped = (s * (r @ p[LIP_INDICES].T)).T + t
        iod = np.linalg.norm(g[EYE_OUTER_R] - g[EYE_OUTER_L])
        aligned.append(100.0 * np.linalg.norm(mapped - g[LIP_INDICES], axis=-1).mean() / max(iod, 1e-6))
    return {
        "lmd": float(np.mean(raw)) if raw else float("nan"),
        "lmd_aligned": float(np.mean(aligned)) if aligned else float("nan"),
        "lmd_frames": len(raw),
    }


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Per-frame mouth opening ``|p13 - p14| / |p33 - p263|`` from (T, >=468, 2) landmarks (NaN where missing)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    gap = np.linalg.norm(lm[:, UPPER_LIP] - lm[:, LOWER_LIP], axis=-1)
    eyes = np.linalg.norm(lm[:, EYE_OUTER_R] - lm[:, EYE_OUTER_L], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return gap / eyes


def fill_gaps(x: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN entries (edges take the nearest value); all-NaN stays NaN."""
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    if ok.all() or not ok.any():
        return x
    t = np.arange(len(x))
    return np.interp(t, t[ok], x[ok])


def resample_series(x: np.ndarray, src_fps: float, dst_fps: float = 25.0) -> np.ndarray:
    """Linear-interpolation resampling of a per-frame series to ``dst_fps`` (same duration)."""
    x = np.asarray(x, dtype=np.float64)
    if abs(src_fps - dst_fps) < 1e-6 or len(x) < 2:
        return x
    n_out = max(1, int(np.floor(len(x) / src_fps * dst_fps + 0.5)))
    t_out = np.arange(n_out) / dst_fps
    return np.interp(t_out, np.arange(len(x)) / src_fps, x)


def audio_envelope(wave: np.ndarray, num_frames: int, fps: float = 25.0, sr: int = 16000,
                   window_s: float = 0.040) -> np.ndarray:
    """``log(1e-8 + RMS)`` of ``window_s`` windows centred on the frame times ``t / fps`` (zero-padded ends)."""
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    half = int(round(window_s * sr / 2))
    padded = np.pad(wave, (half, half))
    csum = np.concatenate([[0.0], np.cumsum(padded ** 2)])
    centres = np.round(np.arange(num_frames) * sr / fps).astype(np.int64) + half
    lo = np.clip(centres - half, 0, len(padded))
    hi = np.clip(centres + half, 0, len(padded))
    energy = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    return np.log(1e-8 + np.sqrt(energy))


def lag_correlation(video: np.ndarray, audio: np.ndarray, max_lag: int = 15, min_overlap: int = 10) -> np.ndarray:
    """Pearson correlation ``r[k]`` between ``video[t]`` and ``audio[t - lag]`` for lag = k - max_lag.

    Computed on the overlapping part of the two series; NaN where the overlap is shorter than ``min_overlap`` or
    a series is constant there.
    """
    v = np.asarray(video, dtype=np.float64)
    a = np.asarray(audio, dtype=np.float64)
    n = min(len(v), len(a))
    v, a = v[:n], a[:n]
    r = np.full(2 * max_lag + 1, np.nan)
    for k, lag in enumerate(range(-max_lag, max_lag + 1)):
        vs = v[max(lag, 0): n + min(lag, 0)]
        as_ = a[max(-lag, 0): n - max(lag, 0)]
        if len(vs) < min_overlap:
            continue
        vs, as_ = vs - vs.mean(), as_ - as_.mean()
        den = np.sqrt((vs ** 2).sum() * (as_ ** 2).sum())
        if den > 0:
            r[k] = float((vs * as_).sum() / den)
    return r


def lipsync_score(
    landmarks: np.ndarray,
    wave: np.ndarray,
    fps: float,
    sr: int = 16000,
    max_lag: int = 15,
    use_diff: bool = False,
    analysis_fps: float = 25.0,
    opening: Optional[np.ndarray] = None,
) -> Dict[str, float]:
    """Landmark lip-sync proxy of one clip (see module docstring).

    Args:
        landmarks: (T, 478, 2) mesh landmarks at ``fps`` (NaN where no face); ignored when ``opening`` is given.
        wave: 16 kHz mono audio aligned with frame 0.
        use_diff: correlate first differences (opening/closing events) instead of levels.
        opening: precomputed per-frame mouth opening (T,), e.g. from synthetic ground truth.
    """
    o = mouth_opening(landmarks) if opening is None else np.asarray(opening, dtype=np.float64)
    valid = int(np.isfinite(o).sum())
    o = resample_series(fill_gaps(o), fps, analysis_fps)
    e = audio_envelope(wave, len(o), analysis_fps, sr)
    if use_diff:
        o, e = np.diff(o), np.diff(e)
    r = lag_correlation(o, e, max_lag)
    if not np.isfinite(r).any():
        return {"lip_r0": float("nan"), "lip_r_best": float("nan"), "lip_lag": float("nan"),
                "lip_conf": float("nan"), "lip_frames": valid}
    k = int(np.nanargmax(r))
    return {
        "lip_r0": float(r[max_lag]),
        "lip_r_best": float(r[k]),
        "lip_lag": int(k - max_lag),
        "lip_conf": float(r[k] - np.nanmedian(r)),
        "lip_frames": valid,
    }
