"""Small test videos made here: synthetic cartoon faces (mediapipe finds them) with synthetic speech."""

from __future__ import annotations

import numpy as np
import pytest


def make_video(path, seconds=1.2, faces=1, audio=True, audio_seconds=None, size=160, fps=25.0, seed=0):
    from vexpress.data.video import write_video
    from vexpress.synthetic.face import neutral_pose, pose_trajectory, render_frame, sample_identity
    from vexpress.synthetic.speech import mouth_track, plan_syllables, synthesize

    rng = np.random.default_rng(seed)
    n = int(round(seconds * fps))
    idents = [sample_identity(rng, f"p{i}") for i in range(max(1, faces))]
    a_sec = seconds if audio_seconds is None else audio_seconds
    wave, voicing, vw = synthesize(plan_syllables(rng, a_sec), a_sec, 150.0, 1.0, rng)
    mouth, _ = mouth_track(voicing, vw, n, fps)
    poses = pose_trajectory(rng, n, fps, size, 0.03, 0.03, 0.08)
    frames = []
    for t in range(n):
        if faces == 0:
            noise = rng.integers(0, 30, (size, size, 3)).astype(np.uint8)
            frames.append(np.full((size, size, 3), 90, np.uint8) + noise)
        elif faces == 1:
            frames.append(render_frame(idents[0], poses[t], tuple(mouth[t]), size, 2))
        else:
            half = [render_frame(idents[i], neutral_pose(size), tuple(mouth[t]), size, 2) for i in range(faces)]
            frames.append(np.concatenate(half, axis=1))
    write_video(path, np.stack(frames), fps, audio=wave if audio else None)
    return path


@pytest.fixture
def video_factory(tmp_path):
    def make(name, **kw):
        return make_video(tmp_path / "in" / name, **kw)

    (tmp_path / "in").mkdir()
    return make
