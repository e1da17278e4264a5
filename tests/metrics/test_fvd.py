import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from tests.metrics._tiny import TinyI3D, save_tiny_i3d
from vexpress.errors import ShapeError, WeightsError
from vexpress.metrics.fvd import FrechetVideoDistance, I3DFeatures, load_i3d_detector, sample_clips


@pytest.fixture(scope="module")
def i3d_path(tmp_path_factory):
    return save_tiny_i3d(tmp_path_factory.mktemp("i3d") / "i3d_torchscript.pt")


def _videos(n, seed, t=16, size=32):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, size, size, generator=g)
    motion = torch.linspace(0, 1, t).view(1, 1, t, 1, 1) * torch.rand(n, 3, 1, 1, 1, generator=g)
    return ((base * 0.7 + motion * 0.3) * 255).round().clamp(0, 255).to(torch.uint8)


def _fvd(path, real, fake, **kw):
    m = FrechetVideoDistance(path, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.update(real, real=True)
        m.update(fake, real=False)
        return float(m.compute())


def test_fvd_self_is_zero_and_grows_with_perturbation(i3d_path):
    real = _videos(12, 0, t=12)
    assert _fvd(i3d_path, real, real) == pytest.approx(0.0, abs=1e-4)
    # Features of the real set are computed once; the metric is then fed features of perturbed copies.
    features = I3DFeatures(load_i3d_detector(i3d_path))
    real_feats = features(real)
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(real.shape, generator=g)
    values = []
    for sigma in (4.0, 16.0, 48.0):
        fake = (real.float() + sigma * noise).round().clamp(0, 255).to(torch.uint8)
        m = FrechetVideoDistance(features)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.update_features(real_feats, real=True)
            m.update(fake, real=False)
            values.append(float(m.compute()))
    assert 0 < values[0] < values[1] < values[2]


def test_streaming_equals_scipy_reference_and_batch_split(i3d_path):
    real, fake = _videos(12, 1), _videos(10, 2)
    feats = I3DFeatures(load_i3d_detector(i3d_path))
    fr, ff = feats(real).numpy(), feats(fake).numpy()
    mu_r, mu_f = fr.mean(0), ff.mean(0)
    s_r, s_f = np.cov(fr, rowvar=False, ddof=0), np.cov(ff, rowvar=False, ddof=0)  # StyleGAN-V: divide by n
    root, _ = scipy.linalg.sqrtm(s_f @ s_r, disp=False)
    ref = float(np.real(((mu_f - mu_r) ** 2).sum() + np.trace(s_f + s_r - 2 * root)))

    m = FrechetVideoDistance(i3d_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for chunk in torch.split(real.flip(0), 7):  # order and split do not matter
            m.update(chunk, real=True)
        for chunk in torch.split(fake, 5):
            m.update(chunk, real=False)
        got = float(m.compute())
    assert got == pytest.approx(ref, rel=1e-4)


def test_detector_is_not_in_state_dict_and_tf1_mode_runs(i3d_path):
    m = FrechetVideoDistance(i3d_path, preprocess="tf1")
    assert not any("conv" in k or "head" in k for k in m.state_dict())
    parent = torch.nn.Module()
    parent.fvd = m
    assert not any("detector" in k or "conv" in k for k in parent.state_dict())
    m.update(_videos(3, 3, size=40), real=True)
    assert int(m.real_features_num_samples) == 3
    assert m.protocol()["preprocess"] == "tf1"


def test_reset_real_features_false_keeps_real_stats(i3d_path):
    m = FrechetVideoDistance(i3d_path, reset_real_features=False)
    m.update(_videos(4, 4), real=True)
    m.update(_videos(4, 5), real=False)
    m.reset()
    assert int(m.real_features_num_samples) == 4 and int(m.fake_features_num_samples) == 0


def test_errors(tmp_path, i3d_path):
    with pytest.raises(WeightsError, match="metrics.fvd.weights_path"):
        FrechetVideoDistance(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    with pytest.raises(WeightsError, match="i3d_torchscript"):
        load_i3d_detector(bad)
    with pytest.raises(ShapeError, match="at least 10"):
        FrechetVideoDistance(i3d_path).update(_videos(2, 0, t=8), real=True)


def test_sample_clips():
    video = torch.arange(40).view(1, 40, 1, 1).expand(3, 40, 2, 2)
    clips = sample_clips(video, num_frames=16, stride=16)
    assert clips.shape == (2, 3, 16, 2, 2)
    assert clips[1, 0, 0, 0, 0] == 16
    assert sample_clips(video, 16, 8, max_clips=2).shape[0] == 2
    assert sample_clips(video[:, :10], 16, 16).shape[0] == 0


def test_tiny_i3d_contract():
    out = TinyI3D()(torch.zeros(2, 3, 16, 224, 224))
    assert out.shape == (2, 400)
