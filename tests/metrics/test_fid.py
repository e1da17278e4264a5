import warnings

import numpy as np
import pytest
import torch

from tests.metrics._tiny import TinyImageExtractor
from vexpress.errors import WeightsError
from vexpress.metrics.fid import FIDInceptionV3, build_fid, fid_protocol
from vexpress.metrics.resize import resize_images, resize_tf1_bilinear


def _images(n, seed, size=48):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 255).round().to(torch.uint8)


def _fid(real, fake, extractor):
    m = build_fid(extractor=extractor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.update(real, real=True)
        m.update(fake, real=False)
        return float(m.compute())


def test_fid_self_is_zero_and_grows_with_perturbation():
    ext = TinyImageExtractor()
    real = _images(64, 0)
    assert _fid(real, real, ext) == pytest.approx(0.0, abs=1e-5)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(real.shape, generator=g)
    values = [_fid(real, (real.float() + s * noise).clamp(0, 255).round().to(torch.uint8), ext) for s in (5, 20, 60)]
    assert 0 < values[0] < values[1] < values[2]


def test_extractor_stays_out_of_state_dict():
    m = build_fid(extractor=TinyImageExtractor())
    holder = torch.nn.Module()
    holder.fid = m
    assert not any("conv" in k for k in holder.state_dict())
    assert fid_protocol(m.inception)["extractor"].startswith("custom")


@pytest.mark.slow
def test_inception_loads_local_weights_strictly(tmp_path):
    net = FIDInceptionV3()
    torch.save(net.state_dict(), tmp_path / "inception.pth")
    metric = build_fid(weights_path=tmp_path / "inception.pth")
    assert not any(k.startswith("inception") for k in metric.state_dict())
    assert "TF1" in fid_protocol(metric.inception)["resize"]
    imgs = _images(1, 3, size=64)
    out = metric.inception(imgs)
    assert out.shape == (1, 2048)
    torch.testing.assert_close(out, net(imgs))


def test_inception_weight_errors(tmp_path):
    with pytest.raises(WeightsError, match="metrics.fid.weights_path"):
        build_fid(weights_path=tmp_path / "nope.pth")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsError, match="do not match"):
        FIDInceptionV3(tmp_path / "wrong.pth")


def _tf1_reference(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 resize_bilinear(align_corners=False) written out pixel by pixel."""
    in_h, in_w = img.shape
    out = np.zeros((out_h, out_w))
    for y in range(out_h):
        sy = y * in_h / out_h
        y0 = int(np.floor(sy))
        y1 = min(y0 + 1, in_h - 1)
        fy = sy - y0
        for x in range(out_w):
            sx = x * in_w / out_w
            x0 = int(np.floor(sx))
            x1 = min(x0 + 1, in_w - 1)
            fx = sx - x0
            top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
            bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
            out[y, x] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize("shape", [((7, 9), (5, 4)), ((5, 4), (11, 13)), ((12, 12), (12, 12))])
def test_tf1_resize_matches_pixel_reference(shape):
    (h, w), (oh, ow) = shape
    img = np.random.default_rng(0).uniform(0, 255, size=(h, w))
    got = resize_tf1_bilinear(torch.from_numpy(img)[None, None], (oh, ow))[0, 0].numpy()
    np.testing.assert_allclose(got, _tf1_reference(img, oh, ow), rtol=1e-12, atol=1e-9)


def test_resize_modes_differ_on_downsampling():
    x = _images(1, 4, size=64).float()
    a = resize_images(x, (29, 29), "bilinear")
    b = resize_images(x, (29, 29), "bilinear_antialias")
    c = resize_images(x, (29, 29), "tf1")
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
