"""Retarget strategies and keypoint time resampling (the official defects are fixed; see the module docstring)."""

from __future__ import annotations

import numpy as np
import pytest

from vexpress.errors import InputError
from vexpress.kps.retarget import (
    eye_nose_ratio,
    face_size,
    matching_frame,
    resample_kps,
    retarget_kps,
    scale_factors,
)

REF = np.array([[200.0, 220.0], [300.0, 220.0], [250.0, 280.0]])  # frontal: eyes 100 apart, nose 60 below


def face(cx, cy, eye=100.0, nose=60.0, yaw=0.0):
    """A synthetic V: eyes ``eye`` apart, nose ``nose`` below their midpoint, shifted sideways by ``yaw``."""
    return np.array([[cx - eye / 2, cy], [cx + eye / 2, cy], [cx + yaw, cy + nose]])


def test_measures():
    assert eye_nose_ratio(REF) == pytest.approx(1.0, abs=1e-6)
    eye, nose = face_size(REF)
    assert eye == pytest.approx(100.0) and nose == pytest.approx(60.0)
    assert eye_nose_ratio(face(0, 0, yaw=20)) > 1.0  # nose closer to the right eye


def test_fix_face_and_no_retarget():
    out = retarget_kps("fix_face", REF, num_frames=7)
    assert out.kps.shape == (7, 3, 2) and np.allclose(out.kps, REF)
    drv = np.stack([face(250 + t, 250) for t in range(5)])
    assert np.allclose(retarget_kps("no_retarget", REF, drv).kps, drv)


def test_matching_frame_is_the_best_pose_not_the_last():
    # frame 1 is frontal like the reference; later frames turn away. The official update rule (which stores the
    # ratio itself as the threshold) would end up on the last frame here.
    drv = np.stack([face(250, 250, yaw=25), face(250, 250, yaw=0), face(250, 250, yaw=10), face(250, 250, yaw=30)])
    assert matching_frame(REF, drv) == 1


def test_offset_retarget_follows_the_nose_with_the_right_sign():
    # driving face half the size of the reference, moving right by 10 px per frame
    drv = np.stack([face(100 + 10 * t, 100, eye=50, nose=30) for t in range(4)])
    out = retarget_kps("offset_retarget", REF, drv, anchor="first")
    assert out.scale == pytest.approx((2.0, 2.0))
    shift = out.kps - REF[None]
    assert np.allclose(shift[:, :, 1], 0)
    assert np.allclose(shift[:, 0, 0], [0, 20, 40, 60])  # +2x the driving motion, not -1/2x
    assert np.allclose(shift[:, 0], shift[:, 2]) and np.allclose(shift[:, 1], shift[:, 2])  # rigid
    official_like = retarget_kps("offset_retarget", REF, drv, anchor="first", offset_gain=-0.5)
    assert np.allclose((official_like.kps - REF[None])[:, 0, 0], [0, -10, -20, -30])


def test_offset_retarget_anchor_is_the_matching_frame():
    drv = np.stack([face(100 + 10 * t, 100, eye=50, nose=30, yaw=(0 if t == 2 else 12)) for t in range(4)])
    out = retarget_kps("offset_retarget", REF, drv)
    assert out.anchor == 2
    assert np.allclose(out.kps[2], REF)  # at the anchor the reference is unchanged


def test_naive_retarget_scales_about_the_anchor_nose_and_lands_on_the_reference_nose():
    drv = np.stack([face(400, 300, eye=50, nose=30, yaw=y) for y in (0, 5, -5)])
    out = retarget_kps("naive_retarget", REF, drv)
    assert out.anchor == 0
    assert np.allclose(out.kps[0], REF)  # same shape after scaling, placed on the reference nose
    assert np.allclose(out.kps[1, 2] - out.kps[0, 2], [10.0, 0.0])  # nose motion scaled x2
    # image-origin independence: moving the whole driving video changes nothing
    assert np.allclose(retarget_kps("naive_retarget", REF, drv + 1000.0).kps, out.kps, atol=1e-3)


def test_scale_guards():
    edge_on = np.array([[100.0, 100.0], [100.5, 100.0], [100.2, 160.0]])  # eyes almost on top of each other
    s = scale_factors(REF, edge_on)
    assert 0.2 <= s[0] <= 5.0 and 0.2 <= s[1] <= 5.0
    flat = np.array([[100.0, 100.0], [200.0, 100.0], [150.0, 100.0]])  # nose on the eye line
    assert scale_factors(REF, flat)[1] == pytest.approx(scale_factors(REF, flat)[0])


def test_resample_equal_longer_shorter_and_fps():
    seq = np.stack([face(100 + t, 100) for t in range(10)]).astype(np.float32)
    assert np.allclose(resample_kps(seq, 10), seq)
    assert np.allclose(resample_kps(seq, 6), seq[:6])  # longer: truncated (same rate)
    stretched = resample_kps(seq, 20)  # shorter: stretched over the whole video
    assert stretched.shape == (20, 3, 2)
    assert np.allclose(stretched[0], seq[0]) and np.allclose(stretched[-1], seq[-1])
    assert np.all(np.diff(stretched[:, 2, 0]) >= 0)
    # 25 fps driving -> 30 fps output: frame i samples the driving time i/30
    timed = resample_kps(seq, 12, source_fps=25, target_fps=30)
    assert timed[6, 2, 0] == pytest.approx(100 + 6 * 25 / 30, abs=1e-4)
    one = resample_kps(seq[:1], 4)
    assert one.shape == (4, 3, 2) and np.allclose(one, seq[0])


def test_errors():
    with pytest.raises(InputError):
        retarget_kps("mirror", REF, num_frames=3)
    with pytest.raises(InputError):
        retarget_kps("naive_retarget", REF, None)
    with pytest.raises(InputError):
        retarget_kps("no_retarget", REF, np.full((3, 3, 2), np.nan))
    with pytest.raises(InputError):
        retarget_kps("fix_face", REF[:2], num_frames=3)
