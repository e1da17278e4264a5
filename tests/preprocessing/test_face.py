"""FaceAnalyzer on real frames (shared samples) and on frames without a face."""

from __future__ import annotations

import numpy as np
import pytest

from vexpress.preprocessing.face import (
    MOUTH_LANDMARKS,
    RECORD_LANDMARKS,
    FaceAnalyzer,
    kps_from_landmarks,
    mouth_box,
)


def test_no_face_on_blank_and_noise():
    rng = np.random.default_rng(0)
    with FaceAnalyzer(mode="image") as fa:
        assert fa(np.zeros((128, 128, 3), np.uint8)) == []
        assert fa(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)) == []


def test_kps_weights_are_affine():
    rng = np.random.default_rng(1)
    lm = rng.random((478, 2)) * 100
    k = kps_from_landmarks(lm)
    k2 = kps_from_landmarks(lm * 2 + 5)
    assert np.allclose(k2, k * 2 + 5, atol=1e-3)
    assert len(set(RECORD_LANDMARKS)) == len(RECORD_LANDMARKS) and len(MOUTH_LANDMARKS) == 40


@pytest.mark.parametrize("mode", ["image", "video"])
def test_real_frames_match_official_kps(samples_path, mode):
    from vexpress.data.video import VideoReader
    from vexpress.kps.io import load_official_kps

    clip = samples_path / "AOC"
    official = load_official_kps(clip / "kps.pth").numpy()
    reader = VideoReader(clip / "gt.mp4")
    idx = [0, 1, 2, 3, 4, 5]
    frames = reader.get(idx)
    assert frames.shape[1:3] == (512, 512)
    with FaceAnalyzer(mode=mode) as fa:
        faces = [fa(f) for f in frames]
    for f, i in zip(faces, idx):
        assert len(f) == 1
        face = f[0]
        assert face.landmarks.shape == (478, 2) and face.kps.shape == (3, 2) and face.bbox.shape == (4,)
        assert 0 < face.score <= 1
        x1, y1, x2, y2 = face.bbox
        assert x1 < face.kps[:, 0].min() and face.kps[:, 0].max() < x2 and y1 < face.kps[:, 1].min() < y2
        err = np.linalg.norm(face.kps - official[i], axis=-1)
        assert err.mean() < 5.0, err
        box = mouth_box(face.landmarks, 2.0)
        assert box[0] < face.kps[2, 0] < box[2] and box[1] < box[3]


def test_two_faces_sorted_by_area(samples_path):
    import cv2

    from vexpress.data.video import VideoReader

    frame = VideoReader(samples_path / "tys" / "gt.mp4").get([0])[0]
    big = cv2.resize(frame, (320, 320))
    small = cv2.resize(frame, (200, 200))
    canvas = np.zeros((360, 560, 3), np.uint8)
    canvas[20:340, 0:320] = big
    canvas[80:280, 350:550] = small
    with FaceAnalyzer(mode="image") as fa:
        faces = fa(canvas)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].kps[2, 0] < 320 < faces[1].kps[2, 0]
