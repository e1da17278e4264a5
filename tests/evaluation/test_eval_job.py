"""The evaluation engine end to end on synthetic clips, every metric with weights the test makes itself."""

import json

import numpy as np
import pytest
import torch

from tests.metrics._tiny import TinyImageExtractor, save_tiny_arcface, save_tiny_i3d
from vexpress.evaluation.media import Video
from vexpress.evaluation.pairs import pairs_from_records
from vexpress.evaluation.report import GT_ROW
from vexpress.evaluation.runner import evaluate_videos
from vexpress.evaluation.specs import (
    FIDSpec,
    FVDSpec,
    IdentitySpec,
    KpsDisSpec,
    LipSyncSpec,
    LMDSpec,
    SyncNetSpec,
    SyntheticSpec,
)
from vexpress.metrics.syncnet import SyncNetV2


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(SyncNetV2().state_dict(), d / "syncnet_v2.model")  # random SyncNet, original parameter names
    save_tiny_i3d(d / "i3d_torchscript.pt")
    save_tiny_arcface(d / "arcface.pt")
    return d


def _degraded(frames, seed):
    rng = np.random.default_rng(seed)
    noisy = frames.astype(np.float32) + rng.normal(scale=12.0, size=frames.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _specs(weights):
    return [FIDSpec(extractor=TinyImageExtractor()), FVDSpec(weights_path=str(weights / "i3d_torchscript.pt")),
            SyncNetSpec(weights_path=str(weights / "syncnet_v2.model")), KpsDisSpec(), LMDSpec(), LipSyncSpec(),
            IdentitySpec(arcface_path=str(weights / "arcface.pt")), SyntheticSpec(frame_stride=4, fit_pose=False)]


@pytest.mark.slow
def test_eval_job_end_to_end_with_gt_row_and_resume(synth_records, weights, tmp_path):
    recs = synth_records[:2]
    generated = {}
    for i, r in enumerate(recs):
        generated[r.id] = Video(frames_=_degraded(r.frames(range(r.num_frames)), i), fps_=r.fps)
    pairs = pairs_from_records(recs, generated)
    out = tmp_path / "eval"
    res = evaluate_videos(pairs, _specs(weights), run_name="noisy", output_dir=out)
    assert res.skipped == {}
    model, gt = res.summary["noisy"], res.summary[GT_ROW]
    assert model["fid"] > 0 and model["fvd"] > 0 and "fid" not in gt
    assert model["fid_n_real"] == model["fid_n_fake"] == sum(r.num_frames for r in recs)
    for col in ("lse_d", "lse_c", "kps_dis", "lmd", "lmd_aligned", "lip_r0", "id_proxy_shape_err", "mouth_err",
                "face_sim"):
        assert np.isfinite(model[col]) and np.isfinite(gt[col]), col
    assert gt["lmd"] == pytest.approx(0.0, abs=1e-9)  # the ground truth against itself, by the same code
    assert gt["mouth_err"] < 0.05 and gt["lip_r_best"] > 0.3
    assert len(res.rows) == 4
    assert -1.0 <= model["face_sim"] <= 1.0 and model["delta_face_sim"] >= 0.0
    proto = res.protocol
    assert proto["fvd"]["clip_frames"] == 16 and proto["syncnet"]["fps"] == 25 and proto["fid"]["frames"]
    roles = {w["role"] for w in res.weights}
    assert {"SyncNet", "FVD I3D", "ArcFace"} <= roles
    assert all(len(w["sha256"]) == 64 and w["size_bytes"] > 0 for w in res.weights)

    paths = res.write(out)
    data = json.loads(paths["json"].read_text())
    assert set(data["summary"]) == {"noisy", GT_ROW} and data["protocol"]["syncnet"]["vshift"] == 15
    md = paths["markdown"].read_text()
    assert "| ground truth |" in md and "LSE-C" in md and "sha256" in md
    assert paths["csv"].read_text().count("\n") == 5

    # resume: every (clip, row) unit is reused; features and face tracks come from the cache
    units = sorted((out / "units").rglob("*.json"))
    stamps = [u.stat().st_mtime_ns for u in units]
    res2 = evaluate_videos(pairs, _specs(weights), run_name="noisy", output_dir=out)
    assert [u.stat().st_mtime_ns for u in units] == stamps
    assert res2.rows == res.rows and res2.summary["noisy"]["fid"] == pytest.approx(model["fid"])


def test_missing_weights_skip_with_a_note(synth_records, tmp_path):
    rec = synth_records[0]
    pairs = pairs_from_records([rec], {rec.id: rec.video})
    res = evaluate_videos(pairs, {"fid": {"weights_path": str(tmp_path / "nope.pth")},
                                  "fvd": {"weights_path": None},
                                  "syncnet": {"weights_path": str(tmp_path / "missing.model")},
                                  "kps": {}, "lipsync": {"enabled": False}},
                          run_name="copy")
    assert set(res.skipped) == {"fid", "fvd", "syncnet"}
    assert "metrics.fid.weights_path" in res.skipped["fid"] and "syncnet_v2.model" in res.skipped["syncnet"]
    assert "lip_r0" not in res.columns
    assert res.summary["copy"]["kps_dis"] == pytest.approx(res.summary[GT_ROW]["kps_dis"])
