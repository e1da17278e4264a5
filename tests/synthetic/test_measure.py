"""Measurement from frames: recovers the ground truth on rendered frames, also blurred and noisy ones."""

from __future__ import annotations

import numpy as np
import pytest

from vexpress.synthetic.face import kps_from_pose, render_frame
from vexpress.synthetic.generate import SynthConfig, generate_clip
from vexpress.synthetic.measure import (
    appearance_descriptor,
    appearance_distance,
    fit_pose,
    measure_clip,
    measure_mouth,
    summarize,
)


class _Rec:
    """A minimal record (what measure_clip reads) around an in-memory clip."""

    def __init__(self, data, size):
        import torch

        self.id, self.height, self.width = "mem", size, size
        self.extra = {"synthetic": {"identity": data["identity"].to_dict()}}
        self.gt_pose = torch.from_numpy(data["gt_pose"])
        self.gt_mouth = torch.from_numpy(data["gt_mouth"])


@pytest.fixture(scope="module")
def clip():
    cfg = SynthConfig(num_identities=4, heldout_identities=1, seconds=2.0, size=64)
    data = generate_clip(cfg, 2, 0)
    return data, _Rec(data, 64)


def _degrade(frames, rng, sigma=1.0, noise=8.0):
    import cv2

    out = [np.clip(cv2.GaussianBlur(f.astype(np.float32), (0, 0), sigma) + rng.normal(0, noise, f.shape), 0, 255)
           for f in frames]
    return np.stack(out).astype(np.uint8)


def test_recovers_ground_truth(clip):
    data, rec = clip
    idx = list(range(0, 50, 3))
    m = measure_clip(data["frames"][idx], rec, idx)
    s = summarize(m)
    assert s["opening_mae"] < 0.03 and s["opening_corr"] > 0.98
    assert s["width_mae"] < 0.08
    assert s["kps_px"] < 0.3
    assert s["appearance_drift"] < 0.02


def test_robust_to_blur_and_noise(clip):
    data, rec = clip
    idx = list(range(0, 50, 3))
    frames = _degrade(data["frames"][idx], np.random.default_rng(0))
    s = summarize(measure_clip(frames, rec, idx))
    assert s["opening_mae"] < 0.05 and s["opening_corr"] > 0.95
    assert s["kps_px"] < 0.6


def test_pose_from_wrong_start(clip):
    data, rec = clip
    for i in (5, 20, 40):
        start = data["gt_pose"][i] + np.array([2.5, -2.0, 1.5, 0.06])
        pose, rms = fit_pose(data["frames"][i], data["identity"], start)
        err = np.linalg.norm(kps_from_pose(pose) - data["kps"][i], axis=-1).mean()
        assert err < 0.5 and rms < 10


def test_mouth_sweep_and_float_inputs(clip):
    data, _ = clip
    ident, pose = data["identity"], data["gt_pose"][0]
    for opening in (0.0, 0.3, 0.6, 1.0):
        for width in (0.1, 0.5, 0.9):
            img = render_frame(ident, pose, (opening, width), 64, 4)
            o, w = measure_mouth(img, pose, ident)
            assert abs(o - opening) < 0.06
            if opening >= 0.3:
                assert abs(w - width) < 0.1
            o2, _ = measure_mouth(img.astype(np.float32) / 127.5 - 1.0, pose, ident)  # [-1, 1] images
            assert abs(o2 - o) < 1e-3


def test_appearance_separates_identities():
    cfg = SynthConfig(num_identities=6, heldout_identities=1, seconds=1.0, size=64)
    a, b = generate_clip(cfg, 0, 0), generate_clip(cfg, 3, 0)
    da = [appearance_descriptor(a["frames"][i], a["gt_pose"][i]) for i in (0, 10, 20)]
    db = appearance_descriptor(b["frames"][0], b["gt_pose"][0])
    same = max(appearance_distance(da[0], d) for d in da[1:])
    assert appearance_distance(da[0], db) > 5 * same
