"""Keypoint files: our weights-only format and safe reading of the official pickled kps.pth."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from vexpress.errors import InputError
from vexpress.kps.io import as_kps_tensor, load_kps, load_official_kps, save_kps


def test_roundtrip_weights_only(tmp_path):
    kps = torch.rand(7, 3, 2) * 512
    path = save_kps(tmp_path / "k.pt", kps)
    loaded = torch.load(path, weights_only=True)
    assert isinstance(loaded, torch.Tensor) and loaded.dtype == torch.float32
    assert torch.equal(loaded, kps)
    assert torch.equal(load_kps(path), kps)


def test_official_format_written_here(tmp_path):
    seq = [np.random.RandomState(i).rand(3, 2).astype(np.float32) * 512 for i in range(5)]
    path = tmp_path / "kps.pth"
    torch.save(seq, path)  # exactly what the official script does
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # plain weights-only refuses numpy
    kps = load_kps(path)
    assert kps.shape == (5, 3, 2)
    assert np.allclose(kps.numpy(), np.stack(seq))


def test_official_sample(samples_path):
    kps = load_official_kps(samples_path / "10" / "kps.pth")
    assert kps.shape == (109, 3, 2)
    assert (kps[:, 0, 0] < kps[:, 1, 0]).all()  # left-in-image eye first
    assert ((kps >= 0) & (kps < 512)).all()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_pickle",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save([_Evil()], path)
    with pytest.raises(InputError) as err:
        load_kps(path)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "pwned_by_pickle").exists()


def test_bad_shapes(tmp_path):
    with pytest.raises(InputError):
        as_kps_tensor(torch.zeros(4, 2, 2))
    with pytest.raises(InputError):
        as_kps_tensor([])
    with pytest.raises(InputError):
        as_kps_tensor(torch.full((2, 3, 2), float("nan")))
    assert as_kps_tensor(np.zeros((3, 5, 2), np.float32)).shape == (3, 3, 2)  # 5-point sets keep the first three
    with pytest.raises(InputError, match="not found"):
        load_kps(tmp_path / "missing.pt")
