import numpy as np
import pytest

from vexpress.metrics.identity import ARCFACE_TEMPLATE, align_face, five_points, identity_shape_error
from vexpress.metrics.landmarks import (
    LIP_INDICES,
    audio_envelope,
    kps_distance,
    lag_correlation,
    landmark_distance,
    lipsync_score,
    mouth_opening,
)


def _face(rng, n=478):
    """A plausible random landmark layout: points in a 200-px face, eye corners and lips at their places."""
    lm = rng.uniform(150, 350, size=(n, 2))
    lm[33], lm[263] = (200, 220), (300, 220)
    lm[13], lm[14] = (250, 330), (250, 332)
    return lm


def _syllable_envelope(duration, rng, rate=4.0):
    """Smooth positive envelope (about ``rate`` syllables/s) as a function of time in seconds."""
    knots_t = np.arange(0, duration + 0.5, 1.0 / (2 * rate))
    knots_v = rng.uniform(0, 1, size=len(knots_t)) ** 2
    return lambda t: np.interp(t, knots_t, knots_v)


@pytest.mark.parametrize("fps,delay_frames", [(25.0, 0), (25.0, 3), (30.0, 2), (25.0, -4)])
def test_lipsync_score_finds_known_offset_on_synthetic_clip(fps, delay_frames):
    rng = np.random.default_rng(11)
    duration = 8.0
    env = _syllable_envelope(duration, rng)
    t_audio = np.arange(int(duration * 16000)) / 16000
    wave = rng.normal(size=len(t_audio)) * (0.01 + env(t_audio)) * 0.3
    n_frames = int(duration * fps)
    delay_s = delay_frames / 25.0
    base = _face(rng)
    landmarks = np.repeat(base[None], n_frames, axis=0)
    opening = 2 + 60 * env(np.arange(n_frames) / fps - delay_s)  # the mouth follows the audio, delay_s later
    landmarks[:, 14, 1] = landmarks[:, 13, 1] + opening
    landmarks[5, :] = np.nan  # a frame without a face is interpolated over
    out = lipsync_score(landmarks, wave, fps=fps)
    assert out["lip_lag"] == delay_frames  # positive: audio leads video
    assert out["lip_r_best"] > 0.8
    assert out["lip_frames"] == n_frames - 1
    if delay_frames == 0:
        assert out["lip_r0"] == pytest.approx(out["lip_r_best"])
    # shuffled audio: no correlation peak worth the name
    other = rng.normal(size=len(t_audio)) * (0.01 + _syllable_envelope(duration, np.random.default_rng(99))(t_audio))
    assert abs(lipsync_score(landmarks, other, fps=fps)["lip_r0"]) < 0.4


def test_lag_correlation_sign_and_envelope_alignment():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    v = np.roll(a, 5)  # video[t] = audio[t - 5]
    r = lag_correlation(v, a, max_lag=15)
    assert int(np.nanargmax(r)) - 15 == 5
    env = audio_envelope(np.r_[np.zeros(16000), np.ones(16000)], num_frames=50, fps=25)
    assert env[10] < -10 and env[40] == pytest.approx(0.0, abs=1e-6)


def test_mouth_opening_is_normalised_by_eye_distance():
    lm = _face(np.random.default_rng(1))[None]
    assert mouth_opening(lm)[0] == pytest.approx(2 / 100)
    assert mouth_opening(lm * 3)[0] == pytest.approx(2 / 100)


def test_kps_distance_scales_and_skips_missing():
    target = np.random.default_rng(2).uniform(100, 400, size=(10, 3, 2))
    pred = target / 2 + np.array([3.0, 4.0]) / 2  # detected on a 256x256 video, 5 px off at 512
    pred[3] = np.nan
    out = kps_distance(pred, target, pred_size=(256, 256))
    assert out["kps_dis"] == pytest.approx(5.0)
    assert out["kps_frames"] == 9 and out["kps_missing"] == 1


def test_lmd_raw_vs_aligned():
    rng = np.random.default_rng(3)
    gt = np.repeat(_face(rng)[None], 4, axis=0)
    assert landmark_distance(gt, gt)["lmd"] == 0.0
    theta = 0.1
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = gt @ rot.T * 1.1 + 7.0  # same mouth shape, different head pose
    out = landmark_distance(moved, gt)
    assert out["lmd"] > 5 and out["lmd_aligned"] == pytest.approx(0.0, abs=1e-6)
    opened = gt.copy()
    opened[:, LIP_INDICES, 1] += 4.0
    assert landmark_distance(opened, gt)["lmd_aligned"] > 1.0


def test_identity_proxy_and_alignment():
    rng = np.random.default_rng(4)
    ref = _face(rng)
    frames = np.stack([ref * 0.9 + 3, ref])
    assert identity_shape_error(frames, ref)["id_proxy_shape_err"] == pytest.approx(0.0, abs=1e-6)
    other = ref + rng.normal(scale=5, size=ref.shape)
    assert identity_shape_error(other[None], ref)["id_proxy_shape_err"] > 1.0
    # alignment puts the 5 points on the ArcFace template
    img = np.zeros((512, 512, 3), np.uint8)
    pts = ARCFACE_TEMPLATE * 3 + 40
    lm = np.zeros((478, 2))
    lm[[468, 473, 1, 61, 291]] = pts
    np.testing.assert_allclose(five_points(lm), pts)
    img[int(pts[2, 1]) - 2: int(pts[2, 1]) + 3, int(pts[2, 0]) - 2: int(pts[2, 0]) + 3] = 255  # mark the nose
    face = align_face(img, pts)
    y, x = np.unravel_index(face[..., 0].argmax(), face.shape[:2])
    assert abs(x - ARCFACE_TEMPLATE[2, 0]) <= 2 and abs(y - ARCFACE_TEMPLATE[2, 1]) <= 2


def test_metric_wrappers_average_over_clips_and_skip_nan():
    from vexpress.metrics import KpsDistance, LipSyncScore

    m = KpsDistance()
    target = np.zeros((4, 3, 2))
    m.update(target + [3.0, 4.0], target)
    m.update(target + [6.0, 8.0], target)
    m.update(np.full((4, 3, 2), np.nan), target)
    assert float(m.compute()["kps_dis"]) == pytest.approx(7.5)
    lip = LipSyncScore()
    lip.update(np.full((30, 478, 2), np.nan), np.zeros(16000), fps=25)
    assert np.isnan(float(lip.compute()["lip_r0"]))
