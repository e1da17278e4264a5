"""Audio input/output: any container PyAV decodes -> mono float32 16 kHz waveform, and a small WAV writer.

Loading follows the official audio-embedding script: decode the audio track, average the channels, resample to
16 kHz with torchaudio (band-limited sinc interpolation).
"""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import torch

from vexpress.errors import InputError
from vexpress.utils.io import atomic_path

SAMPLE_RATE = 16000


def _first_line(err: BaseException) -> str:
    msg = str(err).strip().splitlines()
    return (msg[0] if msg else type(err).__name__)[:160]


def decode_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode the first audio track of ``path`` to (channels, samples) float32 at its native rate."""
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file not found: {path} (check the path)")
    try:
        container = av.open(str(path))
    except Exception as err:  # noqa: BLE001 - av raises many error classes
        raise InputError(f"cannot open {path} as audio: {_first_line(err)} (give a readable audio or video file)") \
            from err
    try:
        if not container.streams.audio:
            raise InputError(f"{path} has no audio track; give a file with sound (wav, mp3, m4a, or a video with "
                             "audio)")
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                if not frame.format.is_planar:  # interleaved (1, S*C) -> (C, S)
                    arr = arr.reshape(-1, len(frame.layout.channels)).T
                if arr.dtype.kind in "iu":
                    arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
                chunks.append(arr.astype(np.float32, copy=False))
                rate = int(frame.sample_rate or rate)
        except InputError:
            raise
        except Exception as err:  # noqa: BLE001
            raise InputError(f"cannot decode the audio of {path}: {_first_line(err)} (the file looks truncated or "
                             "corrupt; re-export it)") from err
    finally:
        container.close()
    if not chunks or rate <= 0:
        raise InputError(f"{path} has an empty audio track; give a file with sound")
    channels = min(c.shape[0] for c in chunks)
    audio = np.concatenate([c[:channels] for c in chunks], axis=1)
    if audio.shape[1] == 0:
        raise InputError(f"{path} has an empty audio track; give a file with sound")
    return audio, rate


def check_waveform(waveform: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A mono (S,) float32 waveform (a (1, S) or (S, 1) one is flattened); :class:`InputError` for several channels
    or less than 25 ms (400 samples at 16 kHz)."""
    wav = torch.as_tensor(waveform)
    if wav.ndim == 2 and 1 in wav.shape:
        wav = wav.reshape(-1)
    if wav.ndim != 1:
        raise InputError(f"audio waveform must be mono (S,), got shape {tuple(wav.shape)}; average the channels first")
    if wav.numel() < 400:
        raise InputError(f"audio is too short ({wav.numel()} samples at 16 kHz); give at least 25 ms of sound")
    return wav.float()


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Resample a (..., S) float waveform with torchaudio (no-op when the rates agree)."""
    if int(orig_rate) == int(new_rate):
        return waveform
    import torchaudio.functional as AF

    return AF.resample(waveform, int(orig_rate), int(new_rate))


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Mono float32 waveform (S,) at ``sample_rate`` (16 kHz) from any file PyAV decodes (wav, mp3, mp4, ...).

    Raises :class:`InputError` with one line for a missing or unreadable file, a file without an audio track, or an
    empty one.
    """
    audio, rate = decode_audio(path)
    wav = torch.from_numpy(np.ascontiguousarray(audio)).float().mean(0)
    wav = resample(wav, rate, sample_rate)
    wav = torch.nan_to_num(wav).clamp_(-1.0, 1.0)
    return wav.contiguous()


def audio_duration(path: str | os.PathLike) -> float:
    """Duration of the decoded audio track in seconds."""
    audio, rate = decode_audio(path)
    return audio.shape[1] / float(rate)


def save_wav(path: str | os.PathLike, waveform: torch.Tensor | np.ndarray, sample_rate: int = SAMPLE_RATE) -> Path:
    """Atomically write a mono 16-bit PCM WAV file (readable by every tool, including PyAV)."""
    wav = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    pcm = (np.clip(wav, -1.0, 1.0) * 32767.0).round().astype("<i2")
    path = Path(path)
    with atomic_path(path) as tmp:
        with wave.open(str(tmp), "wb") as fh:
            fh.setnchannels(1)
            fh.setsampwidth(2)
            fh.setframerate(int(sample_rate))
            fh.writeframes(pcm.tobytes())
    return path
