"""Project-wide test fixtures: offline, seeded, quiet, isolated working directory."""

from __future__ import annotations

import os

# Nothing is ever downloaded: make every hub client fail fast instead of hanging on the closed network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from vexpress.utils.paths import parity_dir, samples_dir  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed_and_offline(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setenv("WANDB_MODE", "offline")
    yield


@pytest.fixture
def parity_path():
    """The official parity vectors; the test is skipped (with the reason) only when the folder is absent."""
    path = parity_dir()
    if not (path / "config.json").is_file():
        pytest.skip(reason=f"parity vectors not present at {path} (set VEXPRESS_PARITY_DIR)")
    return path


@pytest.fixture
def samples_path():
    path = samples_dir()
    if not path.is_dir():
        pytest.skip(reason=f"shared sample clips not present at {path} (set VEXPRESS_SHARED_DIR)")
    return path
