"""Video I/O with PyAV: probing, frame-exact seek decoding, and an atomic H.264 + AAC mp4 writer.

:class:`VideoReader` reads only the frames it is asked for. On first use it demuxes the file once (no decoding)
to learn every frame's timestamp and which frames are keyframes; a request for frames ``[i, j, ...]`` then seeks
to the keyframe at or before each needed run of frames and decodes forward from there, never the whole clip.
Frame numbers are positions in presentation order, so they are exact for variable frame rates and B-frames too.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from vexpress.errors import InputError
from vexpress.utils.io import atomic_path

#: Suffixes of the video files the package reads (PyAV decodes them); folders of inputs are scanned for these.
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".ts", ".wmv")
#: Containers opened by a parent process before a fork: never touched (nor closed) in the child, where their
#: decoder threads do not exist; kept referenced so they are not deallocated there either.
_INHERITED: list = []


def _first_line(err: BaseException) -> str:
    msg = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    return (msg[0] if msg else type(err).__name__)[:160]


def _open(path: Path, what: str = "video"):
    import av

    if not path.is_file():
        raise InputError(f"{what} file not found: {path} (check the path)")
    try:
        return av.open(str(path))
    except Exception as err:  # noqa: BLE001
        raise InputError(f"cannot open {path} as a {what}: {_first_line(err)} (give a readable video file)") from err


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a file without decoding it."""

    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    has_audio: bool
    codec: str
    container: str = ""

    @property
    def is_still_image(self) -> bool:
        """A picture opened as a one-frame "video" (jpeg/png/... read by PyAV's image demuxers)."""
        return self.num_frames <= 1 and (self.container.endswith("_pipe") or self.container in ("image2", "gif")
                                         or self.codec in ("mjpeg", "png", "bmp", "webp", "tiff", "gif"))


class VideoReader:
    """Random access to the frames of one video, decoding only what is needed.

    Picklable (it reopens the file lazily in each process), so a dataset holding readers works with
    ``num_workers > 0``. ``get(indices)`` returns ``(K, H, W, 3)`` uint8 RGB frames in the order asked.

    Args:
        path: the video file.
        max_forward: when the next wanted frame lies at most this many frames ahead of the decoder, decode forward
            instead of seeking (seeking costs a keyframe decode).
    """

    def __init__(self, path: str | os.PathLike, max_forward: int = 48):
        self.path = Path(path)
        self.max_forward = int(max_forward)
        self._container = None
        self._pid = os.getpid()
        self._pts: list[int] | None = None
        self._key: list[int] | None = None  # frame numbers of keyframes (sorted)
        self._fps: float = 0.0
        self._size: tuple[int, int] = (0, 0)
        self._time_base = None
        self._index()

    # -- index -----------------------------------------------------------------------------------------------
    def _index(self) -> None:
        container = _open(self.path)
        try:
            if not container.streams.video:
                raise InputError(f"{self.path} has no video stream; give a video file (mp4, mov, mkv, ...)")
            stream = container.streams.video[0]
            pts_key: list[tuple[int, bool]] = []
            try:
                for packet in container.demux(stream):
                    if packet.size == 0 or packet.pts is None:
                        continue
                    pts_key.append((int(packet.pts), bool(packet.is_keyframe)))
            except Exception as err:  # noqa: BLE001
                raise InputError(f"cannot read {self.path}: {_first_line(err)} (the file looks truncated or corrupt)") \
                    from err
            if not pts_key:
                raise InputError(f"{self.path} has no video frames; give a non-empty video")
            pts_key.sort()
            self._pts = [p for p, _ in pts_key]
            self._key = [i for i, (_, k) in enumerate(pts_key) if k] or [0]
            self._time_base = stream.time_base
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if rate:
                self._fps = float(rate)
            elif len(self._pts) > 1:
                span = float((self._pts[-1] - self._pts[0]) * stream.time_base)
                self._fps = (len(self._pts) - 1) / span if span > 0 else 25.0
            else:
                self._fps = 25.0
            self._size = (int(stream.codec_context.width), int(stream.codec_context.height))
            if self._size[0] <= 0 or self._size[1] <= 0:
                raise InputError(f"{self.path} has a video stream without a frame size; re-encode the file")
        finally:
            container.close()

    @property
    def num_frames(self) -> int:
        return len(self._pts or [])

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self._size

    @property
    def keyframes(self) -> list[int]:
        return list(self._key or [])

    def __len__(self) -> int:
        return self.num_frames

    # -- lifecycle -------------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._container is not None:
            if self._pid == os.getpid():
                self._container.close()
            else:
                _INHERITED.append(self._container)
            self._container = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_container"] = None
        state["_time_base"] = (self._time_base.numerator, self._time_base.denominator) if self._time_base else None
        return state

    def __setstate__(self, state):
        tb = state.get("_time_base")
        state["_time_base"] = Fraction(*tb) if tb else None
        self.__dict__.update(state)

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    # -- decoding --------------------------------------------------------------------------------------------
    def _stream(self):
        if self._container is not None and self._pid != os.getpid():  # forked (DataLoader worker)
            _INHERITED.append(self._container)
            self._container = None
        if self._container is None:
            self._pid = os.getpid()
            self._container = _open(self.path)
            self._container.streams.video[0].thread_type = "AUTO"
        return self._container.streams.video[0]

    def get(self, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed) as a (K, H, W, 3) uint8 RGB array."""
        idx = [int(i) for i in indices]
        n = self.num_frames
        for i in idx:
            if not 0 <= i < n:
                raise InputError(f"frame {i} is out of range for {self.path} ({n} frames)")
        wanted = sorted(set(idx))
        frames = self._decode_sorted(wanted)
        w, h = self._size
        out = np.empty((len(idx), h, w, 3), dtype=np.uint8)
        for k, i in enumerate(idx):
            out[k] = frames[i]
        return out

    def _decode_sorted(self, wanted: list[int]) -> dict[int, np.ndarray]:
        stream = self._stream()
        pts = self._pts
        keys = self._key
        result: dict[int, np.ndarray] = {}
        pos = -1  # frame number the decoder will deliver next (-1 = unknown, must seek)
        decoder: Iterator | None = None
        j = 0
        while j < len(wanted):
            target = wanted[j]
            key = keys[bisect.bisect_right(keys, target) - 1] if keys[0] <= target else 0
            if decoder is None or pos < 0 or target < pos or (target - pos > self.max_forward and key > pos):
                self._container.seek(pts[key], stream=stream, backward=True, any_frame=False)
                decoder = self._container.decode(stream)
                pos = -1
            try:
                frame = next(decoder)
            except StopIteration:
                decoder = None
                if pos < 0:
                    raise InputError(f"cannot decode frame {target} of {self.path} (the file looks truncated)")
                # the container ended before the demuxed index: decode what is missing from a fresh seek
                pos = -1
                continue
            except Exception as err:  # noqa: BLE001
                raise InputError(f"cannot decode {self.path}: {_first_line(err)} (the file looks truncated or "
                                 "corrupt)") from err
            if frame.pts is None:
                pos = pos + 1 if pos >= 0 else key
                num = pos
            else:
                num = bisect.bisect_left(pts, int(frame.pts))
                if num >= len(pts) or pts[num] != int(frame.pts):
                    num = max(0, num - 1)
                pos = num + 1
            if num in result or num < target:
                continue
            if num > target:  # frame was missing from the decode; use the nearest later frame
                while j < len(wanted) and wanted[j] < num:
                    result[wanted[j]] = frame.to_ndarray(format="rgb24")
                    j += 1
            if j < len(wanted) and wanted[j] == num:
                result[num] = frame.to_ndarray(format="rgb24")
                j += 1
        return result

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter_frames(self.path)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count (exact, by demuxing), size, fps, duration and audio presence of a video file."""
    path = Path(path)
    reader = VideoReader(path)
    container = _open(path)
    try:
        has_audio = bool(container.streams.audio)
        codec = container.streams.video[0].codec_context.name
        fmt = container.format.name if container.format else ""
    finally:
        container.close()
    n, fps = reader.num_frames, reader.fps
    return VideoInfo(path=str(path), width=reader.size[0], height=reader.size[1], fps=fps, num_frames=n,
                     duration=n / fps if fps > 0 else 0.0, has_audio=has_audio, codec=codec,
                     container=fmt)


def iter_frames(path: str | os.PathLike, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Decode every frame in order as (H, W, 3) uint8 RGB; ``size=(W, H)`` resizes (bilinear, via libswscale)."""
    path = Path(path)
    container = _open(path)
    try:
        if not container.streams.video:
            raise InputError(f"{path} has no video stream; give a video file (mp4, mov, mkv, ...)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                if size is not None:
                    yield frame.to_ndarray(format="rgb24", width=int(size[0]), height=int(size[1]),
                                           interpolation="BILINEAR")
                else:
                    yield frame.to_ndarray(format="rgb24")
        except InputError:
            raise
        except Exception as err:  # noqa: BLE001
            raise InputError(f"cannot decode {path}: {_first_line(err)} (the file looks truncated or corrupt)") \
                from err
    finally:
        container.close()


def read_all_frames(path: str | os.PathLike) -> np.ndarray:
    """The whole clip as (T, H, W, 3) uint8 (what the official loader does for every sample; avoid in training)."""
    frames = list(iter_frames(path))
    if not frames:
        raise InputError(f"{path} has no decodable frames; give a non-empty video")
    return np.stack(frames)


def write_video(path: str | os.PathLike, frames: np.ndarray | Sequence[np.ndarray], fps: float,
                audio: np.ndarray | None = None, audio_rate: int = 16000, crf: int = 18, gop: int = 12,
                preset: str = "veryfast", threads: int = 1, audio_bitrate: int = 64000) -> Path:
    """Atomically write RGB uint8 frames (T, H, W, 3) as an H.264 mp4, with an optional mono AAC audio track.

    ``gop`` is the keyframe interval: small values make seek-decoding of training samples cheap. Odd frame sizes
    are padded by one pixel (H.264 with yuv420p needs even sizes).
    """
    import av

    arr = np.asarray(frames) if not isinstance(frames, np.ndarray) else frames
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.shape[0] < 1:
        raise InputError(f"frames to write must be (T, H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    t, h, w, _ = arr.shape
    if h % 2 or w % 2:
        arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = arr.shape[1:3]
    rate = Fraction(fps).limit_denominator(1001)
    path = Path(path)
    with atomic_path(path) as tmp:
        container = av.open(str(tmp), mode="w", format="mp4")
        try:
            vs = container.add_stream("libx264", rate=rate)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.options = {"crf": str(int(crf)), "g": str(int(gop)), "keyint_min": str(int(gop)),
                          "preset": preset, "threads": str(int(threads)), "sc_threshold": "0",
                          # libx264's macroblock-tree lookahead made different bytes from the same frames from run to
                          # run (2 of 15 runs on 64 px frames, PyAV 18.1 / its bundled x264); without it the output is
                          # a function of the frames (tests/data/test_video.py::test_writer_is_deterministic)
                          "x264-params": "mbtree=0"}
            vs.codec_context.thread_count = int(threads)  # PyAV's own default (0 = auto) overrides "threads"
            astream = None
            if audio is not None:
                astream = container.add_stream("aac", rate=int(audio_rate))
                astream.layout = "mono"
                astream.bit_rate = int(audio_bitrate)
            for index, frame in enumerate(arr):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                vf.pts = index
                for packet in vs.encode(vf):
                    container.mux(packet)
            for packet in vs.encode():
                container.mux(packet)
            if astream is not None:
                wav = np.asarray(audio, dtype=np.float32).reshape(1, -1)
                chunk = 1024
                for start in range(0, wav.shape[1], chunk):
                    part = np.ascontiguousarray(wav[:, start:start + chunk])
                    af = av.AudioFrame.from_ndarray(part, format="fltp", layout="mono")
                    af.sample_rate = int(audio_rate)
                    af.pts = start
                    for packet in astream.encode(af):
                        container.mux(packet)
                for packet in astream.encode():
                    container.mux(packet)
        finally:
            container.close()
    return path
