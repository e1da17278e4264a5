"""Per-frame silence of a waveform (vexpress.audio.windows.silent_frames)."""

from __future__ import annotations

import pytest
import torch

from vexpress.audio.windows import silent_frames
from vexpress.errors import ShapeError


def test_silent_frames_follow_the_waveform():
    rate, fps = 16000, 25.0
    t = torch.arange(rate) / rate  # 1 s = 25 frames of 640 samples
    wave = 0.5 * torch.sin(2 * torch.pi * 200 * t)
    wave[640 * 5: 640 * 10] = 0.001 * torch.randn(640 * 5)  # frames 5-9: noise floor only
    wave[640 * 20:] = 0.0  # frames 20-24: digital silence
    silent = silent_frames(wave, 27, fps)  # frames 25, 26: past the end of the audio
    expected = torch.zeros(27, dtype=torch.bool)
    expected[5:10] = True
    expected[20:] = True
    assert torch.equal(silent, expected)
    assert silent_frames(torch.zeros(rate), 25, fps).all()  # no sound at all: silent throughout


def test_silent_frames_rejects_wrong_shapes():
    with pytest.raises(ShapeError, match="mono waveform"):
        silent_frames(torch.zeros(2, 100), 4, 25.0)
    with pytest.raises(ShapeError, match="num_frames"):
        silent_frames(torch.zeros(100), 0, 25.0)
