"""vexpress-preprocess on good and bad inputs: reasons in the report, no crash, no partial record, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vexpress.data.records import load_manifest, scan_clips
from vexpress.preprocessing.clips import find_videos, identity_for, preprocess

CFG = {"min_duration": 1.0, "min_face_size": 40, "val_fraction": 0.0, "analysis_size": 256}


@pytest.fixture
def bad_folder(video_factory, tmp_path):
    video_factory("good_001.mp4", seconds=1.6)
    video_factory("noface.mp4", faces=0)
    video_factory("twofaces.mp4", faces=2)
    video_factory("short.mp4", seconds=0.3)
    video_factory("silent.mp4", audio=False)
    video_factory("mismatch.mp4", seconds=1.2, audio_seconds=3.0)
    good = (tmp_path / "in" / "good_001.mp4").read_bytes()
    (tmp_path / "in" / "truncated.mp4").write_bytes(good[: len(good) // 3])
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "in" / "picture.mp4", format="JPEG")
    (tmp_path / "in" / "notes.mov").write_text("not a video at all")
    return tmp_path / "in"


def test_bad_inputs_are_reported_not_fatal(bad_folder, tmp_path):
    out = tmp_path / "out"
    report = preprocess(bad_folder, out, CFG, workers=1, progress=False)
    reasons = {r["id"]: r["reason"] for r in report["skipped_clips"]}
    assert report["kept_clips"] == ["good_001"], reasons
    assert "no face" in reasons["noface"]
    assert "two or more faces" in reasons["twofaces"]
    assert "too short" in reasons["short"]
    assert "no audio track" in reasons["silent"]
    assert "lengths differ" in reasons["mismatch"]
    assert "unreadable" in reasons["truncated"] or "truncated" in reasons["truncated"] \
        or "corrupt" in reasons["truncated"]
    assert "unreadable" in reasons["picture"] and "unreadable" in reasons["notes"]
    assert all("\n" not in r for r in reasons.values())
    # no partial records: only the good clip has a folder, nothing temporary is left
    assert [c.id for c in scan_clips(out)] == ["good_001"]
    assert not [p for p in (out / "clips").iterdir() if p.name.startswith(".")]
    saved = json.loads((out / "report.json").read_text())
    assert saved["skipped"] == 8 and saved["skipped_by_reason"]
    # the good record is complete and usable
    rec = load_manifest(out)[0]
    assert rec.identity == "good" and rec.kind == "real" and rec.valid.float().mean() > 0.9
    assert rec.kps.shape == (rec.num_frames, 3, 2) and rec.mouth.shape == (rec.num_frames, 40, 2)
    assert rec.landmarks.shape[1] > 100 and rec.audio_features.shape[1] == 80

    # resume: nothing is redone, known-bad files are not re-examined
    again = preprocess(bad_folder, out, CFG, workers=1, progress=False)
    assert again["processed_now"] == 0 and again["resumed"] == 9
    assert {r["id"]: r["reason"] for r in again["skipped_clips"]} == reasons


def test_keypoints_match_the_rendered_faces(video_factory, tmp_path):
    video_factory("one.mp4", seconds=1.2, size=192)
    report = preprocess(tmp_path / "in", tmp_path / "out", CFG, workers=1, progress=False)
    assert report["kept"] == 1
    rec = load_manifest(tmp_path / "out")[0]
    kps = rec.kps.numpy()
    # eyes left-to-right, nose below the eyes, all inside the face box
    assert (kps[:, 0, 0] < kps[:, 1, 0]).all() and (kps[:, 2, 1] > kps[:, :2, 1].max(1)).all()
    b = rec.bbox.numpy()
    assert (b[:, 0] < kps[:, :, 0].min(1)).all() and (kps[:, :, 0].max(1) < b[:, 2]).all()


@pytest.mark.slow
def test_parallel_workers_and_cli(video_factory, tmp_path):
    from hydra import compose, initialize_config_dir

    from vexpress.cli._common import config_path
    from vexpress.cli.preprocess import run

    video_factory("a_1.mp4", seconds=1.2, seed=1)
    video_factory("b_1.mp4", seconds=1.2, seed=2)
    video_factory("c.mp4", faces=0)
    with initialize_config_dir(config_dir=config_path(), version_base="1.3"):
        cfg = compose("preprocess", overrides=[f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}",
                                               "workers=2", "progress=false", "preprocess.min_face_size=40",
                                               "preprocess.val_fraction=0.5"])
    report = run(cfg)
    assert report["kept"] == 2 and report["skipped"] == 1
    assert {r.split for r in load_manifest(tmp_path / "out")} <= {"train", "val"}


def test_missing_input_and_names(tmp_path):
    from vexpress.errors import InputError

    with pytest.raises(InputError, match="does not exist"):
        find_videos([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no videos"):
        preprocess(tmp_path / "empty", tmp_path / "out", CFG, progress=False)
    from pathlib import Path

    assert identity_for(Path("WRA_KellyAyotte_000.mp4"), "stem") == "WRA_KellyAyotte"
    assert identity_for(Path("spk3/clip.mp4"), "parent") == "spk3"


def test_official_import(samples_path, tmp_path):
    from vexpress.preprocessing.official import import_official, read_official_meta

    meta = tmp_path / "meta.json"
    # the README's format, trailing commas included
    meta.write_text('[\n {"video": "RD_Radio10_0_clip_0.mp4", "face_info": "RD_Radio10_0_clip_0_face_info.pt",\n'
                    '  "audio_embeds": "RD_Radio10_0_clip_0_aud_embeds.pt",},\n'
                    ' {"video": "missing.mp4", "face_info": "x.pt", "audio_embeds": "y.pt",},\n]\n')
    assert len(read_official_meta(meta)) == 2
    report = import_official(meta, tmp_path / "out", base_dir=samples_path / "official_prepared")
    assert report["kept"] == 1 and report["skipped"] == 1 and "not found" in report["skipped_clips"][0]["reason"]
    rec = load_manifest(tmp_path / "out")[0]
    assert rec.num_frames == 61 and rec.audio_features.shape == (102, 768) and rec.mouth.shape == (61, 20, 2)
    assert rec.audio_encoder == "wav2vec2:official" and rec.valid.all()
