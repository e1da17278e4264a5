"""V-Kps point definitions: fitting, weight tables, equivariance, zero-phase smoothing, and the real-clip figures."""

from __future__ import annotations

import numpy as np
import pytest

from vexpress.preprocessing.face import KPS_ROT_WEIGHTS, KPS_WEIGHTS, kps_from_landmarks
from vexpress.preprocessing.kps_calibration import (
    POINT_MODELS,
    fit_point_models,
    kps_weight_tables,
    leave_one_clip_out,
    point_errors,
    predict_points,
    summarize,
)
from vexpress.preprocessing.kps_extract import smooth_kps


def _random_faces(rng, n_clips=3, frames=40):
    """Random landmark clouds moved by per-frame similarity transforms (different per clip)."""
    base = rng.normal(0, 40, (478, 2))
    clips = []
    for _ in range(n_clips):
        ang = rng.uniform(-0.3, 0.3) + 0.05 * rng.standard_normal(frames)
        scale = rng.uniform(0.8, 1.3) * (1 + 0.02 * rng.standard_normal(frames))
        shift = rng.uniform(150, 350, 2) + rng.normal(0, 5, (frames, 2))
        rot = np.stack([np.stack([np.cos(ang), -np.sin(ang)], -1), np.stack([np.sin(ang), np.cos(ang)], -1)], -2)
        pts = base + rng.normal(0, 2, (frames, 478, 2))  # non-rigid wobble
        clips.append(np.einsum("tij,tnj->tni", rot, pts) * scale[:, None, None] + shift[:, None])
    return clips


def test_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    meshes = _random_faces(rng)
    truth = [np.array([0.2, 0.05, -0.03]), np.array([0.2, 0.05, -0.03]), np.array([0.5, -0.4])]
    official = [predict_points(m, truth) for m in meshes]
    coefs = fit_point_models(meshes, official)
    for c, t in zip(coefs, truth):
        assert np.allclose(c, t, atol=1e-8)
    assert all(m.num_coefficients == len(t) for m, t in zip(POINT_MODELS, truth))
    # no clip is special, so leaving one out changes nothing
    loo = leave_one_clip_out({str(i): m for i, m in enumerate(meshes)}, {str(i): k for i, k in enumerate(official)})
    assert max(float(e.max()) for e in loo.values()) < 1e-6
    s = summarize(loo)
    assert set(s["clips"]) == {"0", "1", "2"} and s["mean"] < 1e-6


def test_weight_tables_reproduce_the_models():
    rng = np.random.default_rng(1)
    lm = _random_faces(rng, n_clips=1)[0]
    coefs = [np.array([0.12, 0.06, -0.02]), np.array([0.12, 0.06, -0.02]), np.array([0.48, -0.45])]
    w, v = kps_weight_tables(coefs, digits=12)
    for row_w, row_v in zip(w, v):
        assert abs(sum(row_w.values()) - 1) < 1e-9 and abs(sum(row_v.values())) < 1e-9
    # evaluate the tables the way face.py does
    wm = np.zeros((3, 478))
    vm = np.zeros((3, 478))
    for j in range(3):
        wm[j, list(w[j])] = list(w[j].values())
        if v[j]:
            vm[j, list(v[j])] = list(v[j].values())
    rot = np.einsum("kn,tnd->tkd", vm, lm)
    pts = np.einsum("kn,tnd->tkd", wm, lm) + np.stack([-rot[..., 1], rot[..., 0]], -1)
    assert np.allclose(pts, predict_points(lm, coefs), atol=1e-8)


def test_published_points_move_with_the_face():
    """Similarity transforms (rotation, scale, shift) of the mesh move the points the same way."""
    rng = np.random.default_rng(2)
    lm = rng.random((478, 2)) * 200 + 100
    k = kps_from_landmarks(lm).astype(np.float64)
    a = 0.4
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = (lm @ rot.T) * 1.7 + np.array([13.0, -7.0])
    assert np.allclose(kps_from_landmarks(moved), (k @ rot.T) * 1.7 + np.array([13.0, -7.0]), atol=2e-3)
    assert len(KPS_WEIGHTS) == len(KPS_ROT_WEIGHTS) == 3
    # the two eyes are mirror images: equal weight on the eye corners' middle, the same pull to the nose bridge
    assert KPS_WEIGHTS[0][168] == KPS_WEIGHTS[1][168]
    assert KPS_WEIGHTS[0][33] == KPS_WEIGHTS[1][263] and KPS_WEIGHTS[0][133] == KPS_WEIGHTS[1][362]


def test_smoothing_is_zero_phase():
    t = np.arange(80, dtype=np.float64)
    ramp = np.stack([t, 2 * t], -1)[:, None, :].repeat(3, 1)  # (T, 3, 2) steady motion
    assert np.allclose(smooth_kps(ramp, 2.0)[6:-6], ramp[6:-6], atol=1e-9)  # no delay on steady motion
    wave = np.sin(2 * np.pi * t / 20)[:, None, None] * np.ones((1, 3, 2))
    sm = smooth_kps(wave, 1.5)
    lags = range(-5, 6)
    corr = [np.dot(np.roll(sm[:, 0, 0], s)[10:-10], wave[10:-10, 0, 0]) for s in lags]
    assert list(lags)[int(np.argmax(corr))] == 0  # the peak is not shifted
    noisy = wave + np.random.default_rng(3).normal(0, 0.3, wave.shape)
    assert np.abs(smooth_kps(noisy, 1.5) - wave).mean() < np.abs(noisy - wave).mean()
    assert np.array_equal(smooth_kps(wave, 0.0), wave.astype(np.float32))
    assert smooth_kps(wave[:3], 2.0).shape == (3, 3, 2)  # shorter than the kernel


def _shared_meshes(samples_path):
    from vexpress.kps.io import load_official_kps
    from vexpress.preprocessing.kps_calibration import mesh_sequence
    from vexpress.utils.safe_load import safe_torch_load

    meshes, refs = {}, {}
    for name in ("10", "AOC", "tys"):
        meshes[name] = mesh_sequence(samples_path / name / "gt.mp4")[0]
        refs[name] = load_official_kps(samples_path / name / "kps.pth").numpy()
    prep = samples_path / "official_prepared"
    info = safe_torch_load(prep / "RD_Radio10_0_clip_0_face_info.pt", "face info")
    meshes["RD"] = mesh_sequence(prep / "RD_Radio10_0_clip_0.mp4")[0]
    refs["RD"] = np.stack([np.asarray(f[0]["kps"][:3], np.float32) for f in info])
    return meshes, refs


@pytest.mark.slow
def test_real_clips_fit_and_leave_one_out(samples_path):
    """The published tables are the fit on the four official clips; clips left out of the fit stay close."""
    meshes, refs = _shared_meshes(samples_path)
    assert all(np.isfinite(m).all() for m in meshes.values())
    coefs = fit_point_models(list(meshes.values()), list(refs.values()))
    w, v = kps_weight_tables(coefs)
    for got, pub in zip(w + v, list(KPS_WEIGHTS) + list(KPS_ROT_WEIGHTS)):
        assert set(got) == set(pub) and all(abs(got[i] - pub[i]) <= 2e-4 for i in pub)
    fitted = summarize({n: point_errors(kps_from_landmarks(m), refs[n]) for n, m in meshes.items()})
    assert fitted["mean"] < 2.2, fitted
    loo = summarize(leave_one_clip_out(meshes, refs))
    assert loo["mean"] < 2.4 and max(r["mean"] for r in loo["clips"].values()) < 2.9, loo
