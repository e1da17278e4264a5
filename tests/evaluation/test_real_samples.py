"""The weight-free metrics on a real clip of the shared samples (official insightface kps.pth as driving kps)."""

import pytest

from vexpress.evaluation.pairs import ClipPair
from vexpress.evaluation.report import GT_ROW
from vexpress.evaluation.runner import evaluate_videos


@pytest.mark.slow
def test_real_clip_ground_truth_row(samples_path):
    d = samples_path / "10"
    pair = ClipPair(clip_id="10", generated=d / "gt.mp4", gt=d / "gt.mp4", audio=d / "aud.mp3",
                    driving_kps=d / "kps.pth", reference=d / "ref.jpg")
    res = evaluate_videos([pair], {"kps": {}, "lmd": {}, "lipsync": {}, "identity": {}}, run_name="copy")
    gt = res.summary[GT_ROW]
    # our mediapipe V-Kps against the official insightface keypoints of the same video: a few pixels at 512x512
    assert gt["kps_dis"] < 5.0 and gt["kps_missing"] == 0
    assert gt["lmd"] == 0.0 and res.summary["copy"]["lip_r0"] == pytest.approx(gt["lip_r0"])
    assert gt["id_proxy_shape_err"] < 10.0
