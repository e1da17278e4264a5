"""Video output with PyAV: streamed, atomic H.264 + AAC MP4 writing (reading lives in :mod:`vexpress.data.video`).

The official code writes an ``mp4v`` file with ``cv2.VideoWriter`` at a recomputed float fps and muxes the audio
with an ffmpeg subprocess (spec §5.2 step 10). Here frames are encoded as they are produced (so a long video never
sits in memory as a whole), at exactly the requested fps (a rational time base), with the audio encoded as AAC in the
same container; the file appears under its final name only when it is complete.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from vexpress.errors import InputError

AUDIO_BITRATE = 128_000


def fps_fraction(fps: float | Fraction) -> Fraction:
    """Exact rational frame rate: 30 -> 30/1, 29.97 -> 2997/100, 30000/1001 stays as given."""
    if isinstance(fps, Fraction):
        return fps
    if not fps or fps <= 0 or fps != fps:
        raise InputError(f"fps must be a positive number, got {fps}")
    return Fraction(str(float(fps))).limit_denominator(1_000_000)


def _as_uint8_frames(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """(F, H, W, 3) uint8 (or float in [0, 1]) -> contiguous uint8 numpy."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach()
        if frames.dtype != torch.uint8:
            frames = (frames.float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        frames = frames.cpu().numpy()
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"video frames must be (F, H, W, 3), got {arr.shape}")
    return np.ascontiguousarray(arr)


class VideoWriter:
    """Streamed H.264 (+ optional AAC) MP4 writer; use as a context manager.

    Args:
        path: destination ``.mp4``; written to a temporary file next to it and renamed on success.
        fps: frame rate (kept exactly, e.g. 30 or 30000/1001).
        width, height: frame size (even numbers: yuv420p).
        audio: optional waveform ``(S,)`` or ``(channels, S)`` float in [-1, 1] to mux.
        sample_rate: its sample rate.
        crf: x264 quality (lower = better; 18 is visually lossless for most content).
        preset: x264 speed preset.
    """

    def __init__(self, path: str | os.PathLike, fps: float | Fraction, width: int, height: int,
                 audio: torch.Tensor | np.ndarray | None = None, sample_rate: int = 16000, crf: int = 18,
                 preset: str = "medium"):
        if width % 2 or height % 2:
            raise InputError(f"video size {width}x{height} must be even for H.264 (yuv420p); use e.g. 512x512")
        self.path = Path(path)
        self.fps = fps_fraction(fps)
        self.width, self.height = int(width), int(height)
        self.audio = audio
        self.sample_rate = int(sample_rate)
        self.crf, self.preset = int(crf), str(preset)
        self.frames_written = 0
        self._ctx = None
        self._container = None

    def __enter__(self) -> "VideoWriter":
        import av

        from vexpress.utils.io import atomic_path

        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._tmp = tmp
        try:
            self._container = av.open(str(tmp), mode="w", format="mp4")
            stream = self._container.add_stream("libx264", rate=self.fps)
            stream.width, stream.height = self.width, self.height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": self.preset}
            self._video = stream
            self._audio = None
            if self.audio is not None:
                wav = self.audio.detach().cpu().numpy() if isinstance(self.audio, torch.Tensor) else self.audio
                wav = np.asarray(wav, dtype=np.float32)
                wav = wav[None] if wav.ndim == 1 else wav
                if wav.ndim != 2 or wav.shape[0] not in (1, 2):
                    raise ValueError(f"audio must be (S,) or (1|2, S), got {wav.shape}")
                self._wav = np.ascontiguousarray(np.clip(wav, -1.0, 1.0))
                self._audio = self._container.add_stream("aac", rate=self.sample_rate)
                self._audio.layout = "mono" if self._wav.shape[0] == 1 else "stereo"
                self._audio.bit_rate = AUDIO_BITRATE
        except BaseException as err:
            self._abort(err)
            raise
        return self

    def write(self, frames: torch.Tensor | np.ndarray) -> None:
        """Append frames (F, H, W, 3) uint8 RGB (or float in [0, 1])."""
        import av

        arr = _as_uint8_frames(frames)
        if arr.shape[1:3] != (self.height, self.width):
            raise ValueError(f"frame size {arr.shape[2]}x{arr.shape[1]} != writer size {self.width}x{self.height}")
        for img in arr:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = self.frames_written
            frame.time_base = 1 / self.fps
            for packet in self._video.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1

    def _write_audio(self) -> None:
        import av

        layout = "mono" if self._wav.shape[0] == 1 else "stereo"
        step = self.sample_rate  # one second per frame handed to the encoder (it re-frames to 1024 samples)
        for start in range(0, self._wav.shape[1], step):
            chunk = np.ascontiguousarray(self._wav[:, start:start + step])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = self.sample_rate
            frame.pts = start
            frame.time_base = Fraction(1, self.sample_rate)
            for packet in self._audio.encode(frame):
                self._container.mux(packet)
        for packet in self._audio.encode(None):
            self._container.mux(packet)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort(exc)
            return
        try:
            for packet in self._video.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._write_audio()
            self._container.close()
            self._container = None
            _default_permissions(self._tmp)
        except BaseException as err:
            self._abort(err)
            raise
        self._ctx.__exit__(None, None, None)

    def _abort(self, err: BaseException | None) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the temporary file is removed anyway
                pass
            self._container = None
        if self._ctx is not None:
            err = err if err is not None else RuntimeError("aborted")
            try:
                self._ctx.__exit__(type(err), err, None)
            except BaseException:  # noqa: BLE001 - atomic_path re-raises the error we are already handling
                pass
            self._ctx = None


def _default_permissions(path: Path) -> None:
    """Give the finished file the permissions of a normally created one (temporary files are private: 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_video(path: str | os.PathLike, frames: torch.Tensor | np.ndarray | Iterable, fps: float | Fraction,
                audio: torch.Tensor | np.ndarray | None = None, sample_rate: int = 16000, crf: int = 18) -> Path:
    """Write frames (T, H, W, 3) uint8 RGB (or an iterable of such chunks) + optional audio to an MP4, atomically."""
    chunks = [frames] if isinstance(frames, (torch.Tensor, np.ndarray)) else frames
    writer = None
    try:
        for chunk in chunks:
            arr = _as_uint8_frames(chunk)
            if writer is None:
                writer = VideoWriter(path, fps, arr.shape[2], arr.shape[1], audio, sample_rate, crf).__enter__()
            writer.write(arr)
    except BaseException as err:
        if writer is not None:
            writer._abort(err)
        raise
    if writer is None:
        raise ValueError("no frames to write")
    writer.__exit__(None, None, None)
    return Path(path)
