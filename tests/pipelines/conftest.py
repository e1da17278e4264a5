"""Fixtures of the generation tests: a tiny pipeline with every path active, sample photos, short audio files."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def tiny_pipe():
    from tests.helpers.tiny import tiny_net, tiny_vae
    from vexpress.audio.encoders import LogMelEncoder
    from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

    encoder = LogMelEncoder()
    return VExpressPipeline(tiny_net(audio_dim=encoder.dim), tiny_vae(), encoder, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def sample_ref():
    from vexpress.utils.paths import samples_dir

    path = samples_dir() / "AOC" / "ref.jpg"
    if not path.is_file():
        pytest.skip(reason=f"shared sample photos not present at {path.parent} (set VEXPRESS_SHARED_DIR)")
    return path


def speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced-sounding test signal: harmonics of 140 Hz with a syllable-rate envelope."""
    t = np.arange(int(round(seconds * rate))) / rate
    rng = np.random.default_rng(seed)
    tone = sum(np.sin(2 * np.pi * 140 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.2 * tone * env).astype(np.float32)


@pytest.fixture
def wav_file(tmp_path):
    from vexpress.audio.io import save_wav

    def make(seconds: float, silent: bool = False, name: str = "a.wav", rate: int = 16000):
        wav = np.zeros(int(round(seconds * rate)), np.float32) if silent else speech_like(seconds, rate)
        return save_wav(tmp_path / name, wav, rate)

    return make
