"""User inputs of generation: the reference photo (face found, cropped, resized) and the driving keypoints.

Reference photo. The official README asks users to crop the face by hand to a square 512x512 image; here the face
is found with :class:`vexpress.preprocessing.face.FaceAnalyzer` and a region of the output aspect ratio is cut
around it: side = ``crop_scale`` x face-box side, centred on the face box. ``crop_scale = 1.9`` is the framing of the
official sample references (their mediapipe face boxes are 257-312 px wide in 512 px images). The region is kept
inside the photo (shifted, and shrunk if the photo is too small), so no artificial border is ever added.
``crop="none"`` uses the photo as framed (resized to the output size), like the official code.

Driving input. A keypoint file (ours or the official ``kps.pth``; 512x512 coordinates by convention), a keypoint
array, or a video. For a video, the largest face of every frame is analysed (tracking mode); frames without a face
are filled by linear interpolation between their neighbours (and reported); the whole video gets one fixed crop,
made with the same rule as the reference (from the median face position and size), so that keypoints "as is"
(``no_retarget``) line up with a reference photo of the same framing. The number of frames read is reported, and a
video that decodes to clearly fewer frames than its container declares (a truncated download or copy) is refused:
more than ``max(2, max_missing x declared)`` frames missing, ``max_missing`` = :data:`DRIVING_MAX_MISSING` by
default (``driving_max_missing`` in ``conf/generate.yaml``; see :func:`driving_tolerance`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from vexpress.errors import InputError, NoFaceError

log = logging.getLogger("vexpress.generate")

#: Crop side / face-box side (framing of the official sample references).
CROP_SCALE = 1.9
#: Suffixes read as keypoint files rather than videos.
KPS_SUFFIXES = (".pth", ".pt", ".pkl", ".npy", ".bin")
#: Coordinate frame of keypoint files (the official extraction script resizes frames to 512x512).
KPS_FILE_SIZE = 512

#: Fraction of its declared frames a driving video may fail to decode before it is refused as truncated.
DRIVING_MAX_MISSING = 0.02
#: ... but a couple of frames are always tolerated (edit lists, a last frame the encoder dropped).
DRIVING_MISSING_FLOOR = 2

Box = tuple[float, float, float, float]

_max_missing: contextvars.ContextVar[float | None] = contextvars.ContextVar("driving_max_missing", default=None)


def check_max_missing(value: float, name: str = "driving_max_missing") -> float:
    """``value`` as a float in [0, 1), else a one-line :class:`InputError` naming ``name``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = float("nan")
    if isinstance(value, bool) or not (math.isfinite(out) and 0.0 <= out < 1.0):
        raise InputError(f"{name}={value!r} must be a fraction in [0, 1) (share of the declared frames a driving "
                         f"video may lack; default {DRIVING_MAX_MISSING})")
    return out


@contextlib.contextmanager
def driving_tolerance(max_missing: float | None):
    """Within the block, :func:`load_driving` uses ``max_missing`` (see the module docstring) unless it is given
    one explicitly; ``None`` keeps :data:`DRIVING_MAX_MISSING`."""
    token = _max_missing.set(None if max_missing is None else check_max_missing(max_missing))
    try:
        yield
    finally:
        _max_missing.reset(token)


# --------------------------------------------------------------------------------------------------------------
# images and geometry
# --------------------------------------------------------------------------------------------------------------
def load_image(source: Any, what: str = "reference image") -> np.ndarray:
    """RGB uint8 (H, W, 3) from a path, a PIL image, a numpy array or a (H, W, 3)/(3, H, W) tensor."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{what} not found: {path} (check the path)")
        try:
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img)
                arr = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise InputError(f"cannot read {what} {path}: {str(err).splitlines()[0][:120]} "
                             "(give a JPEG, PNG or WebP photo)") from err
        return np.ascontiguousarray(arr)
    if isinstance(source, Image.Image):
        return np.ascontiguousarray(np.asarray(source.convert("RGB")))
    if hasattr(source, "detach"):
        source = source.detach().cpu().numpy()
        if source.ndim == 3 and source.shape[0] in (1, 3) and source.shape[-1] not in (1, 3):
            source = source.transpose(1, 2, 0)
    from vexpress.preprocessing.face import check_frame

    return check_frame(np.asarray(source), what)


def fit_box(cx: float, cy: float, side_w: float, side_h: float, img_w: int, img_h: int) -> Box:
    """Region of size (side_w, side_h) centred at (cx, cy), shrunk (keeping its aspect) and shifted to fit."""
    shrink = min(1.0, img_w / side_w, img_h / side_h)
    bw, bh = min(side_w * shrink, float(img_w)), min(side_h * shrink, float(img_h))
    x0 = max(0.0, min(cx - bw / 2, img_w - bw))
    y0 = max(0.0, min(cy - bh / 2, img_h - bh))
    return (x0, y0, min(x0 + bw, float(img_w)), min(y0 + bh, float(img_h)))


def face_crop_box(face_bbox: np.ndarray, img_w: int, img_h: int, out_w: int, out_h: int,
                  crop_scale: float = CROP_SCALE) -> Box:
    """Crop region around a face box with the output's aspect ratio (see the module docstring)."""
    x1, y1, x2, y2 = (float(v) for v in face_bbox)
    side = max(x2 - x1, y2 - y1, 1.0) * float(crop_scale)
    aspect = out_w / out_h
    # the face-box side sets the smaller output dimension; the other follows the aspect ratio
    side_w, side_h = (side * aspect, side) if aspect >= 1 else (side, side / aspect)
    return fit_box((x1 + x2) / 2, (y1 + y2) / 2, side_w, side_h, img_w, img_h)


def full_box(img_w: int, img_h: int) -> Box:
    return (0.0, 0.0, float(img_w), float(img_h))


def resize_region(image: np.ndarray, box: Box, width: int, height: int) -> np.ndarray:
    """Cut ``box`` (x0, y0, x1, y1) out of ``image`` and resize it to (height, width) with a Lanczos filter."""
    from PIL import Image

    img = Image.fromarray(image)
    if box == full_box(img.width, img.height) and img.size == (width, height):
        return np.ascontiguousarray(image)
    out = img.resize((int(width), int(height)), Image.LANCZOS, box=tuple(float(v) for v in box))
    return np.ascontiguousarray(np.asarray(out))


def to_output_coords(points: np.ndarray, box: Box, width: int, height: int) -> np.ndarray:
    """Map (..., 2) source-pixel points into the output frame made from ``box``."""
    x0, y0, x1, y1 = box
    scale = np.array([width / (x1 - x0), height / (y1 - y0)], dtype=np.float64)
    return ((np.asarray(points, dtype=np.float64) - np.array([x0, y0])) * scale).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# reference
# --------------------------------------------------------------------------------------------------------------
@dataclass
class PreparedReference:
    """The reference photo at the output size and its keypoints."""

    image: np.ndarray  # (H, W, 3) uint8
    kps: np.ndarray  # (3, 2) float32, output pixels
    box: Box  # region of the source photo that was used
    source_size: tuple[int, int]  # (width, height) of the source photo
    num_faces: int
    notes: list[str] = field(default_factory=list)


def face_box_from_kps(kps: np.ndarray) -> np.ndarray:
    """Approximate mediapipe face box (x1, y1, x2, y2) from the three V-Kps points.

    Measured on the official sample references: the box side is ~2.75x the eye distance and its centre lies ~80 %
    of the way from the eye midpoint to the nose tip.
    """
    kps = np.asarray(kps, dtype=np.float64)
    eye_mid = (kps[0] + kps[1]) / 2
    centre = eye_mid + 0.8 * (kps[2] - eye_mid)
    side = max(2.75 * float(np.linalg.norm(kps[1] - kps[0])), 8.0)
    return np.array([centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2])


def prepare_reference(image: Any, width: int, height: int, analyzer: Callable | None = None, crop: str = "face",
                      crop_scale: float = CROP_SCALE, what: str = "reference image",
                      kps: np.ndarray | None = None) -> PreparedReference:
    """Load the photo, find its largest face, crop around it (``crop="face"``) and resize to (height, width).

    ``kps``: the photo's (3, 2) keypoints in its own pixels, when known (e.g. a frame of a preprocessed clip, or a
    drawn face that a face detector does not recognise); no face detection is run then.
    """
    if crop not in ("face", "none"):
        raise InputError(f"crop must be 'face', 'none' or 'auto', got {crop!r}")
    name = str(image) if isinstance(image, (str, os.PathLike)) else what
    rgb = load_image(image, what)
    img_h, img_w = rgb.shape[:2]
    if kps is not None:
        from vexpress.kps.retarget import _as_kps

        points = _as_kps(kps, "reference keypoints", single=True)
        box = face_crop_box(face_box_from_kps(points), img_w, img_h, width, height, crop_scale) \
            if crop == "face" else full_box(img_w, img_h)
        return PreparedReference(resize_region(rgb, box, width, height), to_output_coords(points, box, width, height),
                                 box, (img_w, img_h), 1, [])
    if analyzer is None:
        from vexpress.preprocessing.face import FaceAnalyzer

        with FaceAnalyzer(mode="image") as fa:
            faces = fa(rgb)
    else:
        faces = analyzer(rgb)
    if not faces:
        raise NoFaceError(f"no face found in {what} {name}; use a well-lit photo with one clearly visible, "
                          "roughly frontal face (at least ~64 px wide)")
    notes = []
    if len(faces) > 1:
        msg = f"{len(faces)} faces found in {what} {name}; using the largest one"
        log.warning(msg)
        notes.append(msg)
    face = faces[0]
    if crop == "face":
        box = face_crop_box(face.bbox, img_w, img_h, width, height, crop_scale)
        if (box[2] - box[0]) < 0.8 * max(face.bbox[2] - face.bbox[0], 1) * crop_scale:
            notes.append("the photo is too tight around the face for the usual margin; the face fills more of "
                         "the frame than in the official samples")
    else:
        box = full_box(img_w, img_h)
        if abs(img_w / img_h - width / height) > 0.02:
            notes.append(f"{what} is {img_w}x{img_h} but the output is {width}x{height}; it is stretched "
                         "(use crop=face to cut a region of the right shape)")
    out = resize_region(rgb, box, width, height)
    kps = to_output_coords(face.kps, box, width, height)
    return PreparedReference(out, kps, box, (img_w, img_h), len(faces), notes)


# --------------------------------------------------------------------------------------------------------------
# driving keypoints
# --------------------------------------------------------------------------------------------------------------
@dataclass
class DrivingKps:
    """Driving keypoints in output pixels, with their frame rate when known."""

    kps: np.ndarray  # (L, 3, 2) float32
    fps: float | None
    source: str
    missing: list[int] = field(default_factory=list)  # frames without a face, filled by interpolation
    notes: list[str] = field(default_factory=list)
    frames_read: int | None = None  # video: frames decoded
    frames_declared: int | None = None  # video: frames its container declares (None: unknown)


def is_kps_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in KPS_SUFFIXES


def interpolate_missing(kps: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill frames with ``valid == False`` by linear interpolation (held constant before/after the valid ones)."""
    kps = np.asarray(kps, dtype=np.float64).copy()
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        raise ValueError("no valid frame to interpolate from")
    t = np.arange(len(kps))
    flat = kps.reshape(len(kps), -1)
    for j in range(flat.shape[1]):
        flat[:, j] = np.interp(t, idx, flat[idx, j])
    return flat.reshape(kps.shape).astype(np.float32)


def _load_kps_file(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as err:  # noqa: BLE001
            raise InputError(f"cannot read keypoint file {path}: {str(err).splitlines()[0][:120]}") from err
        from vexpress.kps.io import as_kps_tensor

        return as_kps_tensor(arr, f"keypoint file {path}").numpy()
    from vexpress.kps.io import load_kps

    return load_kps(path).numpy()


def load_driving(source: Any, width: int, height: int, *, crop: str = "face", crop_scale: float = CROP_SCALE,
                 max_seconds: float | None = None, analyzer_factory: Callable | None = None,
                 max_missing: float | None = None) -> DrivingKps:
    """Driving keypoints (L, 3, 2) in output pixels from a keypoint file/array or a video.

    Keypoint files and arrays are in 512x512 coordinates (the official convention) and are rescaled to the output
    size. ``max_seconds`` stops decoding a video once that much of it has been read. ``max_missing``: share of its
    declared frames a video may fail to decode (at least :data:`DRIVING_MISSING_FLOOR` frames) before it is refused
    as truncated; default: the :func:`driving_tolerance` in effect, else :data:`DRIVING_MAX_MISSING`.
    """
    if hasattr(source, "shape") and not isinstance(source, (str, os.PathLike)):
        from vexpress.kps.io import as_kps_tensor

        arr = as_kps_tensor(source, "driving keypoints").numpy()
        scale = np.array([width / KPS_FILE_SIZE, height / KPS_FILE_SIZE], dtype=np.float32)
        return DrivingKps(arr * scale, None, "keypoint array")
    path = Path(source)
    if not path.exists():
        raise InputError(f"driving file not found: {path} (give a video of a talking face or a keypoint file)")
    if is_kps_file(path):
        arr = _load_kps_file(path)
        scale = np.array([width / KPS_FILE_SIZE, height / KPS_FILE_SIZE], dtype=np.float32)
        return DrivingKps(arr * scale, None, f"keypoint file {path}")
    if max_missing is None:
        max_missing = _max_missing.get()
    max_missing = DRIVING_MAX_MISSING if max_missing is None else check_max_missing(max_missing, "max_missing")
    return _driving_from_video(path, width, height, crop, crop_scale, max_seconds, analyzer_factory, max_missing)


def declared_frames(path: str | os.PathLike) -> int | None:
    """Frame count a video's container declares (mp4/mov sample table, or duration x rate); None if unknown."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            rate = stream.average_rate or stream.guessed_rate
            if stream.duration and stream.time_base and rate:
                return int(round(float(stream.duration * stream.time_base * rate)))
    except Exception:  # noqa: BLE001 - unreadable files are reported by the decoder with a proper message
        return None
    return None


def missing_allowed(declared: int, max_missing: float) -> int:
    """Frames a driving video of ``declared`` frames may lack: max(floor, max_missing x declared)."""
    return max(DRIVING_MISSING_FLOOR, int(math.floor(max_missing * declared)))


def _driving_from_video(path: Path, width: int, height: int, crop: str, crop_scale: float,
                        max_seconds: float | None, analyzer_factory: Callable | None,
                        max_missing: float = DRIVING_MAX_MISSING) -> DrivingKps:
    from vexpress.data.video import iter_frames, probe_video

    fps = probe_video(path).fps or None
    declared = declared_frames(path)
    max_frames = None
    if max_seconds is not None and fps:
        max_frames = int(np.ceil(max_seconds * fps)) + 2
    if analyzer_factory is None:
        from vexpress.preprocessing.face import FaceAnalyzer

        analyzer_factory = lambda: FaceAnalyzer(mode="video")  # noqa: E731
    kps, boxes, valid = [], [], []
    size = None
    stopped_early = False
    analyzer = analyzer_factory()
    try:
        for i, frame in enumerate(iter_frames(path)):
            if max_frames is not None and i >= max_frames:
                stopped_early = True
                break
            size = (frame.shape[1], frame.shape[0])
            faces = analyzer(frame)
            if faces:
                kps.append(np.asarray(faces[0].kps, dtype=np.float32))
                boxes.append(np.asarray(faces[0].bbox, dtype=np.float32))
                valid.append(True)
            else:
                kps.append(np.zeros((3, 2), np.float32))
                boxes.append(np.zeros(4, np.float32))
                valid.append(False)
    finally:
        close = getattr(analyzer, "close", None)
        if close is not None:
            close()
    if not kps:
        raise InputError(f"driving video {path} has no decodable frames; re-export it as H.264 mp4")
    notes = []
    read = len(kps)
    if stopped_early:
        msg = f"driving video {path}: read the first {read} frames" + (f" of {declared}" if declared else "") + \
              " (enough for the audio)"
    else:
        lacking = (declared - read) if declared else 0
        if declared and lacking > missing_allowed(declared, max_missing):
            raise InputError(f"driving video {path} decodes to only {read} of the {declared} frames its container "
                             f"declares ({lacking} missing): the file looks truncated; re-export or re-download it "
                             f"(or allow it with driving_max_missing={min(0.99, lacking / declared + 0.01):.2f})")
        msg = f"driving video {path}: read {read} frames" + (f" of the {declared} declared" if declared else "")
        if lacking > 0:
            allowed = missing_allowed(declared, max_missing)
            msg += f"; {lacking} could not be decoded (within the tolerance of {allowed})"
    if "could not be decoded" in msg:
        log.warning(msg)
    read_note = msg  # in the notes (the command line logs them)
    valid_arr = np.array(valid)
    if not valid_arr.any():
        raise NoFaceError(f"no face found in any frame of driving video {path}; give a video of a visible talking "
                          "face, or use retarget=fix_face without a driving input")
    missing = [int(i) for i in np.flatnonzero(~valid_arr)]
    kps_arr = interpolate_missing(np.stack(kps), valid_arr)
    if missing:
        msg = (f"driving video {path}: no face in {len(missing)} of {len(kps)} frames "
               f"(first: {missing[:5]}); their keypoints were interpolated from the neighbouring frames")
        log.warning(msg)
        notes.append(msg)
    notes.append(read_note)
    img_w, img_h = size
    if crop == "face":
        good = np.stack(boxes)[valid_arr]
        centre = np.median((good[:, :2] + good[:, 2:]) / 2, axis=0)
        side = float(np.median(np.maximum(good[:, 2] - good[:, 0], good[:, 3] - good[:, 1])))
        box = face_crop_box(np.array([centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2,
                                      centre[1] + side / 2]), img_w, img_h, width, height, crop_scale)
    else:
        box = full_box(img_w, img_h)
    out = to_output_coords(kps_arr, box, width, height)
    return DrivingKps(out, fps, f"driving video {path}", missing, notes, read, declared)
