"""Fixtures of the browser-app tests: a tiny export, the app's config, a launched app on a free local port."""

from __future__ import annotations

import socket

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the app extra is not installed (pip install -e '.[app]')")

#: Small and quick: 64x64 at 10 fps, 2 DDIM steps, 8-frame windows.
FAST = dict(height=64, width=64, fps=10, num_inference_steps=2, context_frames=8, context_overlap=2)


@pytest.fixture(scope="session")
def app_export(tmp_path_factory):
    from tests.helpers.tiny import tiny_net, tiny_vae
    from vexpress.models.weights import save_export

    path = tmp_path_factory.mktemp("app_export") / "tiny"
    return save_export(path, tiny_net(audio_dim=80), tiny_vae(), audio_encoder={"name": "logmel"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_config(**overrides):
    from hydra import compose, initialize_config_dir

    from vexpress.cli._common import config_path

    args = [f"{k}={v}" for k, v in {**FAST, **overrides}.items()]
    with initialize_config_dir(config_dir=config_path(), version_base="1.3"):
        return compose(config_name="app", overrides=args)


@pytest.fixture
def launched(app_export, tmp_path):
    """``launched(**overrides)`` -> a running :class:`vexpress.app.ui.Server` (closed after the test)."""
    from vexpress.app.ui import start

    servers = []

    def make(**overrides):
        cfg = app_config(weights=app_export, port=free_port(), work_dir=tmp_path / "app", **overrides)
        servers.append(start(cfg))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def sample_photo():
    from vexpress.utils.paths import samples_dir

    path = samples_dir() / "10" / "ref.jpg"
    if not path.is_file():
        pytest.skip(reason=f"shared sample photo not present at {path} (set VEXPRESS_SHARED_DIR)")
    return path


@pytest.fixture
def sample_speech(sample_photo, tmp_path):
    """``sample_speech(seconds)`` -> a WAV of the first ``seconds`` of the sample clip's speech."""
    from vexpress.audio.io import load_audio, save_wav

    def make(seconds: float):
        wave = load_audio(sample_photo.parent / "aud.mp3").numpy()
        cut = wave[: int(round(seconds * 16000))].astype(np.float32)
        return save_wav(tmp_path / f"speech_{seconds:g}s.wav", cut, 16000)

    return make
