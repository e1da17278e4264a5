"""Fixtures of the evaluation tests: a small synthetic benchmark (real clips from vexpress.synthetic)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    from vexpress.synthetic import SynthConfig, generate_dataset

    cfg = SynthConfig(num_identities=3, heldout_identities=1, clips_per_identity=1, seconds=1.4, size=64)
    return generate_dataset(cfg, tmp_path_factory.mktemp("synth"), workers=1)


@pytest.fixture(scope="session")
def synth_records(synth_root):
    from vexpress.data.records import load_manifest

    return load_manifest(synth_root)
