"""Opt-in checks against the real metric weights (never downloaded): point the env vars at local files.

    VEXPRESS_I3D_PATH=/models/i3d_torchscript.pt VEXPRESS_SYNCNET_PATH=/models/syncnet_v2.model \
    VEXPRESS_INCEPTION_PATH=/models/weights-inception-2015-12-05-6726825d.pth pytest -m weights tests/metrics
"""

import os
import warnings

import pytest
import torch

pytestmark = pytest.mark.weights


def _env_path(name):
    path = os.environ.get(name)
    if not path or not os.path.isfile(path):
        pytest.skip(reason=f"real weights not present: set {name} to the local weight file to run this check")
    return path


def test_fvd_zeros_vs_ones_golden():
    """common_metrics_on_video_quality's sanity value: 8 black vs 8 white 30x64x64 videos give FVD about 151."""
    from vexpress.metrics.fvd import FrechetVideoDistance

    m = FrechetVideoDistance(_env_path("VEXPRESS_I3D_PATH"), preprocess="bilinear")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.update(torch.zeros(8, 3, 30, 64, 64), real=True)
        m.update(torch.ones(8, 3, 30, 64, 64), real=False)
        assert float(m.compute()) == pytest.approx(151.0, abs=3.0)


def test_syncnet_v2_loads_strictly():
    from vexpress.metrics.syncnet import load_syncnet

    net = load_syncnet(_env_path("VEXPRESS_SYNCNET_PATH"))
    with torch.no_grad():
        assert net.forward_aud(torch.zeros(1, 1, 13, 20)).shape == (1, 1024)


def test_inception_loads_strictly():
    from vexpress.metrics.fid import FIDInceptionV3

    net = FIDInceptionV3(_env_path("VEXPRESS_INCEPTION_PATH"))
    assert net(torch.zeros(1, 3, 299, 299, dtype=torch.uint8)).shape == (1, 2048)
