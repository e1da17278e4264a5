"""What the evaluation reads: videos (file or in-memory frames), their audio, face tracks, keypoints, images.

Everything expensive is cached on disk by content: a video's fingerprint is the sha256 of its file (or of its frame
bytes), so cached face tracks and features are reused across runs and multirun jobs and are never stale.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from vexpress.errors import InputError
from vexpress.utils.io import atomic_path

NUM_MESH = 478


def _sha256_file(path: Path) -> str:
    from vexpress.metrics.weights import sha256_file

    return sha256_file(path)


def short_hash(obj: Any) -> str:
    """Stable 16-hex hash of a JSON-able object (config fingerprints)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def as_uint8_frames(frames: Any) -> np.ndarray:
    """Frames as (T, H, W, 3) uint8 RGB.

    Accepts numpy arrays or CPU tensors laid out (T, H, W, 3), (T, 3, H, W) or (3, T, H, W) (the project's video
    layout without the batch axis); uint8, or float in [0, 1] or [-1, 1] (a float array with negative values is
    taken as [-1, 1]).
    """
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().float().numpy() if frames.is_floating_point() else frames.detach().cpu().numpy()
    arr = np.asarray(frames)
    if arr.ndim == 4 and arr.shape[-1] != 3:
        if arr.shape[1] == 3:
            arr = arr.transpose(0, 2, 3, 1)
        elif arr.shape[0] == 3:
            arr = arr.transpose(1, 2, 3, 0)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"video frames must be (T, H, W, 3), (T, 3, H, W) or (3, T, H, W) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
        if arr.size and float(arr.min()) < 0.0:
            arr = (arr + 1.0) * 127.5
        elif arr.size and float(arr.max()) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


@dataclass
class Video:
    """A video to score, from a file (decoded on first use) or from in-memory RGB frames.

    Attributes:
        path: video file (mp4, ...); its audio track, if any, is available through :meth:`audio`.
        frames_: frames given directly (then ``fps_`` is required): (T, H, W, 3), (T, 3, H, W) or (3, T, H, W),
            uint8 or float in [0, 1] / [-1, 1] (see :func:`as_uint8_frames`).
        fps_: frame rate of ``frames_`` (read from the file otherwise).
        audio_: optional 16 kHz mono waveform that goes with ``frames_``.
    """

    path: Optional[Path] = None
    frames_: Optional[np.ndarray] = None
    fps_: Optional[float] = None
    audio_: Optional[np.ndarray] = None
    _cache: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.path is None and self.frames_ is None:
            raise InputError("a video needs a file path or frames")
        if self.path is not None:
            self.path = Path(self.path)
            if not self.path.is_file():
                raise InputError(f"video file not found: {self.path} (check the input folders)")
        if self.frames_ is not None:
            self.frames_ = as_uint8_frames(self.frames_)
            if self.fps_ is None:
                raise InputError("in-memory video frames need their fps")

    @property
    def name(self) -> str:
        return str(self.path) if self.path is not None else "<frames>"

    def problem(self) -> Optional[str]:
        """Why this video cannot be scored at all (unreadable container, no video frames), or None. Cheap: the file
        is demuxed, not decoded; damage further in is found by the metrics that decode it."""
        if self.path is None:
            return None if len(self.frames_) else "no frames"
        if "problem" not in self._cache:
            from vexpress.data.video import probe_video
            from vexpress.errors import VExpressError

            try:
                info = probe_video(self.path)
                self._cache.setdefault("fps", float(info.fps))
                self._cache.setdefault("has_audio", bool(info.has_audio))
                self._cache["problem"] = None if info.num_frames > 0 else f"{self.path} has no video frames"
            except VExpressError as err:
                self._cache["problem"] = str(err)
        return self._cache["problem"]

    def frames(self) -> np.ndarray:
        if self.frames_ is not None:
            return self.frames_
        if "frames" not in self._cache:
            from vexpress.data.video import read_all_frames

            self._cache["frames"] = read_all_frames(self.path)
        return self._cache["frames"]

    @property
    def fps(self) -> float:
        if self.fps_ is not None:
            return float(self.fps_)
        if "fps" not in self._cache:
            from vexpress.data.video import probe_video

            info = probe_video(self.path)
            self._cache["fps"] = float(info.fps)
            self._cache["has_audio"] = bool(info.has_audio)
        return self._cache["fps"]

    @property
    def num_frames(self) -> int:
        return int(self.frames().shape[0])

    @property
    def size(self) -> tuple:
        """(W, H)."""
        f = self.frames()
        return int(f.shape[2]), int(f.shape[1])

    def audio(self) -> Optional[np.ndarray]:
        """16 kHz mono float32 waveform of the video's own audio track (None when it has none)."""
        if self.audio_ is not None:
            return np.asarray(self.audio_, dtype=np.float32)
        if self.path is None:
            return None
        _ = self.fps  # probes has_audio
        if not self._cache.get("has_audio"):
            return None
        if "audio" not in self._cache:
            from vexpress.audio import load_audio

            self._cache["audio"] = load_audio(self.path).numpy()
        return self._cache["audio"]

    def fingerprint(self) -> str:
        if "fp" not in self._cache:
            if self.path is not None:
                self._cache["fp"] = _sha256_file(self.path)
            else:
                h = hashlib.sha256(self.frames_.tobytes())
                h.update(f"{self.frames_.shape}{self.fps_}".encode())
                self._cache["fp"] = h.hexdigest()
        return self._cache["fp"]

    def release(self) -> None:
        """Forget decoded frames (keeps fps / fingerprint)."""
        for k in ("frames", "audio"):
            self._cache.pop(k, None)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise InputError(f"reference image not found: {p} (check the input folders)")
    try:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as err:  # noqa: BLE001
        raise InputError(f"cannot read reference image {p}: {err} (give a jpg/png file)") from err


def load_audio_file(path: str | os.PathLike) -> np.ndarray:
    from vexpress.audio import load_audio

    return load_audio(path).numpy()


def load_kps_file(path: str | os.PathLike) -> np.ndarray:
    """A driving keypoint file (ours or the official ``kps.pth``) as (T, 3, 2) float64 in 512x512 coordinates."""
    from vexpress.kps.io import load_kps

    return load_kps(path).double().numpy()


# ---------------------------------------------------------------------------------------------------------------
# Face tracks


@dataclass
class FaceTrack:
    """The largest face of every frame. NaN where nothing was found.

    Attributes:
        bbox: (T, 4) ``x1, y1, x2, y2`` pixels.
        kps: (T, 3, 2) V-Kps points [left-in-image eye, right-in-image eye, nose].
        landmarks: (T, 478, 2) face-mesh landmarks.
        size: (W, H) of the frames.
    """

    bbox: np.ndarray
    kps: np.ndarray
    landmarks: np.ndarray
    size: tuple

    @property
    def num_frames(self) -> int:
        return int(self.bbox.shape[0])

    @property
    def has_box(self) -> np.ndarray:
        return np.isfinite(self.bbox).all(-1)

    @property
    def has_mesh(self) -> np.ndarray:
        return np.isfinite(self.landmarks).all((-1, -2))

    def to_npz(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(buf, bbox=self.bbox, kps=self.kps, landmarks=self.landmarks.astype(np.float32),
                            size=np.array(self.size))
        return buf.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> "FaceTrack":
        z = np.load(io.BytesIO(data))
        return cls(bbox=z["bbox"], kps=z["kps"], landmarks=z["landmarks"].astype(np.float64),
                   size=tuple(int(v) for v in z["size"]))


def track_from_frames(frames: np.ndarray, analyzer_mode: str = "video") -> FaceTrack:
    """Run the project's mediapipe :class:`~vexpress.preprocessing.face.FaceAnalyzer` on every frame."""
    from vexpress.preprocessing.face import FaceAnalyzer

    t = len(frames)
    bbox = np.full((t, 4), np.nan)
    kps = np.full((t, 3, 2), np.nan)
    lms = np.full((t, NUM_MESH, 2), np.nan)
    with FaceAnalyzer(mode=analyzer_mode) as analyzer:
        for i, frame in enumerate(frames):
            faces = analyzer(frame)
            if not faces:
                continue
            face = faces[0]
            bbox[i] = face.bbox
            kps[i] = face.kps
            if face.landmarks is not None:
                lms[i] = face.landmarks
    h, w = frames.shape[1:3]
    return FaceTrack(bbox=bbox, kps=kps, landmarks=lms, size=(int(w), int(h)))


def face_track(video: Video, cache_dir: Optional[Path] = None, analyzer_mode: str = "video") -> FaceTrack:
    """Face track of a video, cached under ``cache_dir/faces`` by the video's content hash."""
    if "track" in video._cache:
        return video._cache["track"]
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "faces" / f"{video.fingerprint()}_{analyzer_mode}.npz"
        if path.is_file():
            try:
                track = FaceTrack.from_npz(path.read_bytes())
                video._cache["track"] = track
                return track
            except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
                pass
    track = track_from_frames(video.frames(), analyzer_mode)
    if path is not None:
        with atomic_path(path) as tmp:
            tmp.write_bytes(track.to_npz())
    video._cache["track"] = track
    return track


def image_face(image: np.ndarray) -> Optional[np.ndarray]:
    """478 landmarks of the largest face of one image (None when there is no mesh)."""
    from vexpress.preprocessing.face import FaceAnalyzer

    with FaceAnalyzer(mode="image") as analyzer:
        faces = analyzer(image)
    if not faces or faces[0].landmarks is None:
        return None
    return np.asarray(faces[0].landmarks, dtype=np.float64)


def time_align(series: np.ndarray, src_fps: float, dst_fps: float, num: int) -> np.ndarray:
    """Pick, for each of ``num`` frames at ``dst_fps``, the ``series`` entry (at ``src_fps``) nearest in time.

    Entries past the end of ``series`` are NaN.
    """
    series = np.asarray(series, dtype=np.float64)
    idx = np.floor(np.arange(num) * (float(src_fps) / float(dst_fps)) + 0.5).astype(np.int64)
    out = np.full((num,) + series.shape[1:], np.nan)
    ok = idx < len(series)
    out[ok] = series[idx[ok]]
    return out
