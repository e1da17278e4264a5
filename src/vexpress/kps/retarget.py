"""Keypoint retargeting: turn a driving keypoint sequence into the V-Kps sequence that animates the reference face.

Keypoints are ``(T, 3, 2)`` float ``(x, y)`` pixels of the output frame, rows [left-in-image eye, right-in-image eye,
nose]. Strategies (names as in the official ``inference.py``, spec §5.2 step 6):

``fix_face``
    every frame is the reference keypoints: a still head (scenario 2; no driving input needed).
``no_retarget``
    the driving keypoints as they are (scenario 1: the same person, framed like the reference).
``offset_retarget``
    the reference "V" moved rigidly with the driving nose: ``ref + s * (nose_t - nose_anchor)``.
``naive_retarget``
    the driving face shape and motion, scaled to the reference face size and placed so that the anchor frame's
    nose lands on the reference nose: ``ref_nose + s * (kps_t - nose_anchor)``.

``s = (sx, sy)`` scales the driving face to the reference face: ``sx`` = ratio of eye distances, ``sy`` = ratio of
the nose-to-eye-line distances, both measured on the *anchor* frame, the driving frame whose pose best matches the
reference (ratio of the eye-to-nose distances closest to the reference's).

Defects of the official ``retarget_kps`` fixed here (spec §9.4):

1. Anchor selection: the official loop compares ``|r_t - r_ref|`` with a running value that it then overwrites with
   ``r_t`` itself instead of the difference, so nearly every frame passes the test and usually the *last* frame
   sets the scale. Here the frame with the smallest ``|r_t - r_ref|`` is used (first one on ties).
2. Scaling centre: the official code scales about the image origin (0, 0). In both of its strategies the following
   translation cancels that, so the numbers are the same as scaling about the anchor nose; the code here scales
   about the anchor nose explicitly.
3. ``offset_retarget`` moved the reference by *minus half* the driving nose displacement (inverted and damped).
   Here the reference follows the driving motion with the full scaled displacement; ``offset_gain`` scales it
   (``offset_gain=-0.5`` gives the official direction and halving).
4. Translation anchor: the official code aligns the *first* driving frame with the reference whatever its pose;
   here the anchor frame (the best pose match) is aligned, so a driving video that starts mid-turn does not shift
   the whole sequence. ``anchor="first"`` restores the official choice.
5. Degenerate scales (a driving face seen edge-on: eye distance or nose height near zero) are guarded: ``sy``
   falls back to ``sx`` and both are clipped to [0.2, 5].

Time resampling (:func:`resample_kps`): the official code truncates a longer sequence to the video length and
linearly stretches a shorter one. With a known driving fps the sequence is sampled at the output frame times
instead (so a 25 fps driving video drives a 30 fps output at the right speed); a sequence shorter than the audio is
stretched over the whole video, as in the official code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vexpress.errors import InputError

STRATEGIES = ("fix_face", "no_retarget", "offset_retarget", "naive_retarget")
SCALE_RANGE = (0.2, 5.0)
_EPS = 1e-6


def _as_kps(kps, what: str, single: bool = False) -> np.ndarray:
    arr = kps.detach().cpu().numpy() if hasattr(kps, "detach") else np.asarray(kps)
    arr = np.asarray(arr, dtype=np.float64)
    shape = (3, 2) if single else None
    if single and arr.shape != shape:
        raise InputError(f"{what} must be (3, 2) [left eye, right eye, nose] x (x, y), got {arr.shape}")
    if not single and (arr.ndim != 3 or arr.shape[1:] != (3, 2) or arr.shape[0] < 1):
        raise InputError(f"{what} must be (T, 3, 2) [left eye, right eye, nose] x (x, y), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{what} contains NaN or infinite values; fill missing frames first")
    return arr


def eye_nose_ratio(kps: np.ndarray) -> np.ndarray:
    """``|eye0 - nose| / |eye1 - nose|`` per frame (..., 3, 2) -> (...): a yaw cue (1 = frontal)."""
    kps = np.asarray(kps, dtype=np.float64)
    d0 = np.linalg.norm(kps[..., 0, :] - kps[..., 2, :], axis=-1)
    d1 = np.linalg.norm(kps[..., 1, :] - kps[..., 2, :], axis=-1)
    return d0 / (d1 + _EPS)


def face_size(kps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eye distance, distance from the nose to the eye-to-eye segment) per frame of (..., 3, 2) keypoints."""
    kps = np.asarray(kps, dtype=np.float64)
    a, b, c = kps[..., 0, :], kps[..., 1, :], kps[..., 2, :]
    ab = b - a
    eye = np.linalg.norm(ab, axis=-1)
    t = np.clip(np.sum((c - a) * ab, axis=-1) / np.maximum(eye ** 2, _EPS), 0.0, 1.0)
    nearest = a + t[..., None] * ab
    return eye, np.linalg.norm(c - nearest, axis=-1)


def matching_frame(reference: np.ndarray, driving: np.ndarray) -> int:
    """Index of the driving frame whose eye-to-nose ratio is closest to the reference's (first on ties)."""
    ref = _as_kps(reference, "reference keypoints", single=True)
    drv = _as_kps(driving, "driving keypoints")
    return int(np.argmin(np.abs(eye_nose_ratio(drv) - eye_nose_ratio(ref))))


def scale_factors(reference: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """(sx, sy) that scale the ``anchor`` face (3, 2) to the ``reference`` face (3, 2), guarded and clipped."""
    ref_eye, ref_nose = face_size(reference)
    drv_eye, drv_nose = face_size(anchor)
    sx = ref_eye / drv_eye if drv_eye > _EPS and ref_eye > _EPS else 1.0
    sy = ref_nose / drv_nose if drv_nose > 1e-3 * max(drv_eye, _EPS) and ref_nose > _EPS else sx
    return np.clip(np.array([sx, sy], dtype=np.float64), *SCALE_RANGE)


@dataclass
class RetargetResult:
    """Retargeted keypoints ``kps`` (T, 3, 2) float32 and how they were made."""

    kps: np.ndarray
    strategy: str
    anchor: int | None = None
    scale: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)


def resample_kps(kps: np.ndarray, num_frames: int, source_fps: float | None = None,
                 target_fps: float | None = None) -> np.ndarray:
    """Resample a (L, 3, 2) sequence to ``num_frames`` frames (linear interpolation in time).

    With both fps given and a sequence long enough, frame ``i`` of the output takes the driving pose at time
    ``i / target_fps``. Otherwise (no fps, or a driving sequence shorter than the output) the sequence is truncated
    (at equal fps) or stretched over the whole output as the official code does.
    """
    kps = _as_kps(kps, "driving keypoints")
    length = kps.shape[0]
    if num_frames < 1:
        raise InputError(f"need at least one output frame, got {num_frames}")
    if length == 1:
        return np.repeat(kps, num_frames, axis=0).astype(np.float32)
    src_fps = float(source_fps) if source_fps else None
    dst_fps = float(target_fps) if target_fps else None
    if src_fps is None or dst_fps is None:
        src_fps = dst_fps = 1.0  # one driving frame per output frame (official assumption)
    needed = (num_frames - 1) / dst_fps  # time of the last output frame
    if (length - 1) / src_fps + 0.5 / src_fps >= needed:
        pos = np.arange(num_frames, dtype=np.float64) * (src_fps / dst_fps)
    else:  # too short: stretch over the whole video (align_corners=False, like F.interpolate)
        pos = (np.arange(num_frames, dtype=np.float64) + 0.5) * (length / num_frames) - 0.5
    pos = np.clip(pos, 0.0, length - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, length - 1)
    w = (pos - lo)[:, None, None]
    return ((1.0 - w) * kps[lo] + w * kps[hi]).astype(np.float32)


def retarget_kps(strategy: str, reference: np.ndarray, driving: np.ndarray | None = None,
                 num_frames: int | None = None, *, anchor: str = "match", offset_gain: float = 1.0
                 ) -> RetargetResult:
    """Apply a retarget strategy.

    Args:
        strategy: one of :data:`STRATEGIES`.
        reference: (3, 2) reference keypoints (output-frame pixels).
        driving: (T, 3, 2) driving keypoints already in output-frame pixels and resampled to the video length
            (not needed for ``fix_face``).
        num_frames: output length for ``fix_face`` (default: the driving length).
        anchor: ``"match"`` (the driving frame whose pose best matches the reference) or ``"first"`` (official).
        offset_gain: multiplier of the nose displacement in ``offset_retarget`` (official: -0.5).
    """
    if strategy not in STRATEGIES:
        raise InputError(f"unknown retarget strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if anchor not in ("match", "first"):
        raise InputError(f"retarget anchor must be 'match' or 'first', got {anchor!r}")
    ref = _as_kps(reference, "reference keypoints", single=True)
    if strategy == "fix_face":
        n = num_frames if num_frames is not None else (len(driving) if driving is not None else None)
        if n is None or n < 1:
            raise InputError("fix_face needs the number of frames (give num_frames)")
        return RetargetResult(np.repeat(ref[None], n, axis=0).astype(np.float32), strategy)
    if driving is None:
        raise InputError(f"retarget strategy {strategy} needs driving keypoints; give driving=VIDEO_OR_KPS_FILE "
                         "or use retarget=fix_face")
    drv = _as_kps(driving, "driving keypoints")
    if num_frames is not None and num_frames != len(drv):
        drv = resample_kps(drv, num_frames).astype(np.float64)
    if strategy == "no_retarget":
        return RetargetResult(drv.astype(np.float32), strategy)
    idx = matching_frame(ref, drv) if anchor == "match" else 0
    s = scale_factors(ref, drv[idx])
    notes = []
    if anchor == "match":
        notes.append(f"anchor frame {idx} (eye-nose ratio {eye_nose_ratio(drv[idx]):.3f} vs reference "
                     f"{eye_nose_ratio(ref):.3f})")
    nose_anchor = drv[idx, 2]
    if strategy == "offset_retarget":
        offset = (drv[:, 2, :] - nose_anchor) * s * float(offset_gain)  # (T, 2)
        out = ref[None] + offset[:, None, :]
    else:  # naive_retarget
        out = ref[2][None, None, :] + (drv - nose_anchor[None, None, :]) * s
    return RetargetResult(out.astype(np.float32), strategy, anchor=idx, scale=(float(s[0]), float(s[1])),
                          notes=notes)
