"""Video output with PyAV: streamed, atomic H.264 + AAC MP4 writing (reading lives in :mod:`vexpress.data.video`).

The official code writes an ``mp4v`` file with ``cv2.VideoWriter`` at a recomputed float fps and muxes the audio
with an ffmpeg subprocess (spec §5.2 step 10). Here frames are encoded as they are produced (so a long video never
sits in memory as a whole), at exactly the requested fps (a rational time base), with the audio encoded as AAC in the
same container; the file appears under its final name only when it is complete.

Temporary file. The video is written to ``.<name>.XXXXXXXX.tmp-part`` in the destination folder and renamed onto
``<name>`` when complete. :func:`reserve_output` creates that file before any compute (so an unwritable destination,
e.g. ``/proc``, fails at once, even for root, for whom ``os.access`` always says yes) and holds an exclusive
``flock`` on it while the run lives. A run killed with SIGKILL cannot remove its temporary file, but its lock dies
with it: the next reservation of the same output name removes every unlocked ``.<name>.*.tmp-part`` (stale) and
leaves locked ones (a live run) alone. :class:`VideoWriter` adopts the reservation of its path when there is one.
A stop signal (Ctrl-C, SIGTERM) waits while the file is created and registered, and a registered reservation that
no ``with`` block discarded (the signal landed just before it) is removed at interpreter exit.

Audio track. The muxed audio is trimmed or zero-padded to the video's exact duration (frames / fps), so the audio
and video streams end together; decoders may still add up to one AAC frame (1024 samples) of silence at the end.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from vexpress.errors import InputError
from vexpress.utils.io import deferred_signals

AUDIO_BITRATE = 128_000
#: Suffix of the temporary files of outputs being written.
TMP_SUFFIX = ".tmp-part"

try:  # POSIX advisory locks mark the temporary files of live runs
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: no locks, no stale-file cleanup
    fcntl = None  # type: ignore[assignment]


def _key(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _try_lock(fd: int) -> bool:
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporary files of ``path`` (``.<name>.XXXXXXXX.tmp-part``) that no live process holds (see module doc)."""
    path = _key(path)
    if fcntl is None or not path.parent.is_dir():
        return []
    pattern = re.compile(re.escape(f".{path.name}.") + r"[A-Za-z0-9_]+" + re.escape(TMP_SUFFIX) + "$")
    stale = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if not pattern.match(entry.name) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY)
            except OSError:
                continue
            try:
                if _try_lock(fd):
                    stale.append(Path(entry.path))
            finally:
                os.close(fd)  # releases the probe lock
    return stale


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files left by killed runs writing ``path``; returns what was removed."""
    removed = []
    for tmp in stale_temporaries(path):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


#: Live reservations by resolved output path (adopted by :class:`VideoWriter`).
_RESERVED: dict[Path, "OutputReservation"] = {}


class OutputReservation:
    """The temporary file of one output, created and locked up front; see :func:`reserve_output`.

    ``commit()`` renames it onto the output (normal permissions); ``discard()`` removes it. Use as a context
    manager: leaving the block without a commit discards it (and the folders the reservation created, if empty).
    """

    def __init__(self, path: Path, tmp: Path, fd: int, new_folders: list[Path]):
        self.path, self.tmp, self._fd = path, tmp, fd
        self.new_folders = new_folders
        self.committed = False
        self.removed_stale: list[Path] = []

    @property
    def active(self) -> bool:
        return self._fd is not None

    def _release(self) -> None:
        if _RESERVED.get(self.path) is self:
            del _RESERVED[self.path]
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def commit(self) -> Path:
        _default_permissions(self.tmp)
        os.replace(self.tmp, self.path)
        self.committed = True
        self._release()
        return self.path

    def discard(self) -> None:
        if not self.committed:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
        self._release()
        if not self.committed:
            for folder in self.new_folders:  # deepest first
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def __enter__(self) -> "OutputReservation":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def reserve_output(path: str | os.PathLike, what: str = "output video") -> OutputReservation:
    """Create (and lock) the temporary file of ``path`` in its folder now, before any compute.

    Raises :class:`InputError` (one line) when the output cannot be written there: a directory name, a parent that
    is a file, a read-only or virtual file system (``/proc``), no permission. Stale temporary files of earlier killed
    runs for the same output name are removed first. :class:`VideoWriter` for the same path uses this file.
    """
    path = _key(path)
    if path.is_dir():
        raise InputError(f"{what} path {path} is a directory; give a file name")
    parent = path.parent
    new_folders = []
    p = parent
    while not p.exists() and p != p.parent:
        new_folders.append(p)
        p = p.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create folder {parent} for the {what}: {err.strerror or err}; choose another "
                         "output path") from err
    removed = remove_stale_temporaries(path)
    # from the file's creation to its registration a stop signal waits; once registered, the file is removed by
    # the caller's ``with`` block or, if the signal lands before that block is entered, at interpreter exit
    with deferred_signals():
        try:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=parent)
        except OSError as err:
            for folder in new_folders:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise InputError(f"cannot write the {what} {path}: creating a file in {parent} failed "
                             f"({err.strerror or err}); choose a writable folder") from err
        _try_lock(fd)
        res = OutputReservation(path, Path(name), fd, new_folders)
        res.removed_stale = removed
        previous = _RESERVED.get(path)
        _RESERVED[path] = res
    if previous is not None and previous is not res:
        previous.discard()
    return res


@atexit.register
def discard_unfinished() -> None:
    """Remove every reservation of this process not committed: at interpreter exit (also after ``SystemExit`` from
    SIGTERM), and before a forced exit that skips the interpreter's clean-up."""
    for res in list(_RESERVED.values()):
        res.discard()


def reserved_for(path: str | os.PathLike) -> OutputReservation | None:
    """The live reservation of ``path`` made by :func:`reserve_output` in this process, if any."""
    res = _RESERVED.get(_key(path))
    return res if res is not None and res.active else None


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
        self._res: OutputReservation | None = None
        self._container = None

    def __enter__(self) -> "VideoWriter":
        import av

        # the temporary file reserved up front by the caller (reserve_output), or a new one now
        self._res = reserved_for(self.path) or reserve_output(self.path)
        tmp = self._tmp = self._res.tmp
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

    def audio_samples(self) -> int:
        """Samples of audio that cover the frames written so far exactly: round(frames / fps * sample_rate)."""
        return int(round(Fraction(self.frames_written) / self.fps * self.sample_rate))

    def _fitted_audio(self) -> np.ndarray:
        """The audio trimmed, or padded with silence, to the video's duration."""
        n = self.audio_samples()
        wav = self._wav[:, :n]
        if wav.shape[1] < n:
            wav = np.pad(wav, ((0, 0), (0, n - wav.shape[1])))
        return np.ascontiguousarray(wav)

    def _write_audio(self) -> None:
        import av

        wav = self._fitted_audio()
        layout = "mono" if wav.shape[0] == 1 else "stereo"
        step = self.sample_rate  # one second per frame handed to the encoder (it re-frames to 1024 samples)
        for start in range(0, wav.shape[1], step):
            chunk = np.ascontiguousarray(wav[:, start:start + step])
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
            self._res.commit()
        except BaseException as err:
            self._abort(err)
            raise

    def _abort(self, err: BaseException | None = None) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the temporary file is removed anyway
                pass
            self._container = None
        res = getattr(self, "_res", None)
        if res is not None:
            res.discard()
            self._res = None


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
