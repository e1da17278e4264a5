"""Driving keypoints: our mediapipe points vs the exact synthetic ones and the official insightface kps.pth."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from vexpress.errors import NoFaceError
from vexpress.preprocessing.kps_extract import extract_kps, extract_kps_and_audio


def _cartoon_video(path, seconds=1.0, size=200, face=True):
    from vexpress.data.video import write_video
    from vexpress.synthetic.face import kps_from_pose, pose_trajectory, render_frame, sample_identity

    rng = np.random.default_rng(4)
    n = int(seconds * 25)
    ident = sample_identity(rng, "d")
    poses = pose_trajectory(rng, n, 25.0, size, 0.03, 0.04, 0.1)
    if face:
        frames = np.stack([render_frame(ident, poses[t], (0.3, 0.5), size, 2) for t in range(n)])
    else:
        frames = np.full((n, size, size, 3), 120, np.uint8)
    write_video(path, frames, 25.0, audio=0.1 * np.sin(np.arange(int(seconds * 16000)) / 8.0).astype(np.float32))
    return kps_from_pose(poses) * (512.0 / size)


def test_cartoon_driving_video(tmp_path):
    gt = _cartoon_video(tmp_path / "d.mp4")
    kps_path, wav = extract_kps_and_audio(tmp_path / "d.mp4", tmp_path / "out" / "d_kps.pth")
    kps = torch.load(kps_path, weights_only=True)
    assert kps.dtype == torch.float32 and kps.shape == (25, 3, 2)
    assert np.linalg.norm(kps.numpy() - gt, axis=-1).mean() < 8.0  # cartoon eyes/nose differ from real faces
    assert wav == tmp_path / "out" / "d_kps.wav" and wav.is_file()


def test_no_face_is_refused(tmp_path):
    _cartoon_video(tmp_path / "e.mp4", face=False)
    with pytest.raises(NoFaceError):
        extract_kps(tmp_path / "e.mp4")


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "x.mp4").write_text("garbage")
    proc = subprocess.run([sys.executable, "-m", "vexpress.cli.extract_kps", f"video={tmp_path / 'x.mp4'}",
                           f"output={tmp_path / 'k.pth'}", f"hydra.run.dir={tmp_path / 'logs'}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
    assert not (tmp_path / "k.pth").exists()


def _check_clip(clip_dir, limit):
    from vexpress.kps.io import load_official_kps

    ours = extract_kps(clip_dir / "gt.mp4").numpy()
    theirs = load_official_kps(clip_dir / "kps.pth").numpy()
    assert ours.shape == theirs.shape
    err = np.linalg.norm(ours - theirs, axis=-1)
    assert err.mean() <= limit, err.mean(0)
    return err


def test_official_sample_within_3px(samples_path):
    _check_clip(samples_path / "AOC", 3.0)


@pytest.mark.slow
def test_all_official_samples_within_3px(samples_path):
    errs = [_check_clip(samples_path / c, 3.0) for c in ("10", "AOC", "tys")]
    assert np.concatenate(errs).mean() <= 3.0
