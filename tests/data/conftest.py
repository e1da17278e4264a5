"""A tiny synthetic dataset shared by the data tests (generated once per session, ~2 s)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory):
    from vexpress.synthetic.generate import SynthConfig, generate_dataset

    cfg = SynthConfig(num_identities=3, heldout_identities=1, clips_per_identity=1, seconds=2.4, size=32,
                      supersample=2, gop=6)
    return generate_dataset(cfg, tmp_path_factory.mktemp("tiny_set"), workers=1)
