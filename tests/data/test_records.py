"""Dataset records: atomic clip folders, manifest, lazy tensors."""

from __future__ import annotations

import json

import pytest
import torch

from vexpress.data.records import (
    clean_partial,
    load_manifest,
    read_manifest,
    scan_clips,
    write_clip,
    write_manifest,
)
from vexpress.errors import InputError


def _tensors(t=5, n_feat=7):
    return {"bbox": torch.zeros(t, 4), "kps": torch.rand(t, 3, 2), "mouth": torch.rand(t, 40, 2),
            "valid": torch.ones(t, dtype=torch.uint8), "audio": torch.zeros(1600),
            "audio_features": torch.rand(n_feat, 3)}


def _meta(cid="c1", t=5):
    return {"id": cid, "split": "train", "identity": "p1", "video": "/nonexistent.mp4", "fps": 25.0,
            "num_frames": t, "width": 32, "height": 32, "audio_encoder": "logmel3", "kind": "real",
            "source": "somewhere"}


def test_roundtrip_and_lazy(tmp_path):
    rec = write_clip(tmp_path, _meta(), _tensors())
    write_manifest(tmp_path, [rec], kind="real")
    recs = load_manifest(tmp_path)
    assert [r.id for r in recs] == ["c1"] and recs[0].extra["source"] == "somewhere"
    r = recs[0]
    assert r._cache == {}  # nothing loaded yet
    assert r.kps.shape == (5, 3, 2) and set(r._cache) == {"kps"}
    assert r.valid.dtype == torch.bool and r.has("audio_features") and not r.has("landmarks")
    with pytest.raises(InputError, match="no 'landmarks'"):
        r.landmarks
    assert load_manifest(tmp_path, split="val") == []
    assert read_manifest(tmp_path)["kind"] == "real"


def test_failed_write_leaves_nothing(tmp_path):
    def broken_writer(path):
        path.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_clip(tmp_path, _meta("c2"), _tensors(), video_writer=broken_writer)
    assert scan_clips(tmp_path) == []
    assert [p.name for p in (tmp_path / "clips").iterdir()] == []


def test_shape_check_before_writing(tmp_path):
    bad = _tensors()
    bad["kps"] = torch.zeros(4, 3, 2)
    with pytest.raises(InputError, match="'kps'"):
        write_clip(tmp_path, _meta("c3"), bad)
    assert scan_clips(tmp_path) == []


def test_replace_existing_and_cleanup(tmp_path):
    write_clip(tmp_path, _meta("c4"), _tensors())
    write_clip(tmp_path, {**_meta("c4"), "split": "val"}, _tensors())
    assert [r.split for r in scan_clips(tmp_path)] == ["val"]
    (tmp_path / "clips" / ".c9.zz.tmp-part").mkdir()
    assert clean_partial(tmp_path) == 1


def test_bad_manifest(tmp_path):
    with pytest.raises(InputError, match="no manifest.json"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a vexpress dataset"):
        load_manifest(tmp_path)
