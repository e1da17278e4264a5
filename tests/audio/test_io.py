"""Audio loading: any PyAV-readable file -> 16 kHz mono float32, one-line errors for bad files."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from vexpress.audio import SAMPLE_RATE, load_audio, save_wav
from vexpress.errors import InputError


def _write_stereo_wav(path, rate, seconds, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    left = 0.5 * np.sin(2 * np.pi * freq * t)
    right = -0.25 * np.sin(2 * np.pi * freq * t)
    pcm = (np.stack([left, right], 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(2)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(pcm.tobytes())


def test_stereo_44k_wav_is_averaged_and_resampled(tmp_path):
    path = tmp_path / "a.wav"
    _write_stereo_wav(path, 44100, 1.0)
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and wav.ndim == 1
    assert abs(wav.numel() - SAMPLE_RATE) <= 1
    # channel mean of 0.5 sin and -0.25 sin = 0.125 sin
    assert wav[2000:-2000].abs().max().item() == pytest.approx(0.125, abs=0.01)


def test_save_wav_roundtrip(tmp_path):
    x = torch.sin(torch.arange(8000) / 16000 * 2 * torch.pi * 300) * 0.3
    path = save_wav(tmp_path / "x.wav", x)
    y = load_audio(path)
    assert y.shape == x.shape
    assert torch.allclose(x, y, atol=2e-4)


def test_sample_mp3_and_mp4(samples_path):
    a = load_audio(samples_path / "10" / "aud.mp3")
    b = load_audio(samples_path / "10" / "gt.mp4")
    assert a.ndim == 1 and a.numel() > SAMPLE_RATE
    assert abs(a.numel() - b.numel()) < SAMPLE_RATE // 10


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_garbage_file(tmp_path):
    path = tmp_path / "x.mp3"
    path.write_bytes(b"this is not audio" * 10)
    with pytest.raises(InputError) as err:
        load_audio(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_video_without_audio(tmp_path):
    from vexpress.data.video import write_video

    path = write_video(tmp_path / "v.mp4", np.zeros((4, 16, 16, 3), np.uint8), fps=25)
    with pytest.raises(InputError, match="no audio track"):
        load_audio(path)
