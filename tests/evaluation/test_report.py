"""Reports, comparison tables, W&B logging, pair discovery and the eval config."""

import json

import numpy as np
import pytest

from vexpress.audio import save_wav
from vexpress.data.video import write_video
from vexpress.errors import InputError
from vexpress.evaluation.pairs import discover_pairs
from vexpress.evaluation.report import GT_ROW, comparison_rows, log_wandb, render_markdown, write_comparison
from vexpress.evaluation.runner import EvalResults


def _result(name, value, gt_value=1.0):
    return EvalResults(
        run_name=name,
        rows=[{"clip_id": "a", "row": name, "role": "model", "condition": "correct", "lse_c": value},
              {"clip_id": "a", "row": GT_ROW, "role": "gt", "condition": "correct", "lse_c": gt_value}],
        summary={name: {"lse_c": value, "fid": 3.0, "fid_n_real": 10, "fid_n_fake": 10, "clips": 1},
                 GT_ROW: {"lse_c": gt_value, "clips": 1}},
        stats={}, columns={"lse_c": "max", "fid": "min", "fid_n_real": "info", "fid_n_fake": "info"},
        protocol={"syncnet": {"fps": 25}},
        weights=[{"role": "SyncNet", "path": "/w/s.model", "size_bytes": 3, "sha256": "ab" * 32}],
        notes=["a note"], skipped={"fvd": "FVD skipped: no I3D"}, meta={"clips": 1, "generated_videos": 1})


def test_markdown_has_gt_row_protocol_weights_and_skips():
    md = render_markdown(_result("stage1", 5.0))
    assert "| row | LSE-C ↑ | FID ↓ | clips |" in md and "| stage1 | 5 | 3 | 1 |" in md
    assert "| ground truth |" in md and "FVD skipped" in md and "ab" * 32 in md and "fps: 25" in md
    assert "N real = 10" in md


def test_comparison_merges_identical_gt_rows(tmp_path):
    for i, name in enumerate(["stage1", "stage2", "stage2"]):
        _result(name, float(i)).write(tmp_path / str(i))
    paths = write_comparison(sorted(tmp_path.rglob("eval_summary.json")), tmp_path)
    rows = json.loads(paths["json"].read_text())["rows"]
    assert [r["run"] for r in rows] == ["stage1", "stage2", "stage2 (2)", "ground truth"]
    assert "| ground truth |" in paths["markdown"].read_text()
    other_gt = _result("stage3", 1.0, gt_value=2.0).to_dict()
    rows, _ = comparison_rows([_result("stage1", 0.0).to_dict(), other_gt])
    assert [r["run"] for r in rows][-2:] == ["ground truth", "ground truth (stage3)"]


def test_wandb_offline_table(tmp_path):
    log_wandb(_result("stage1", 5.0), mode="offline", save_dir=tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and any(p.suffix == ".wandb" for p in runs[0].iterdir())


def test_discover_pairs_flat_layout_and_notes(tmp_path):
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    gen, gt = tmp_path / "gen", tmp_path / "gt"
    for cid in ("a", "b"):
        write_video(gen / f"{cid}.mp4", frames, 25)
    for cid in ("a", "c"):
        write_video(gt / f"{cid}.mp4", frames, 25)
    save_wav(gt / "a.wav", np.zeros(1600, np.float32))
    pairs, notes = discover_pairs(gen, gt)
    by_id = {p.clip_id: p for p in pairs}
    assert set(by_id) == {"a", "b"} and by_id["a"].gt is not None and by_id["b"].gt is None
    assert str(by_id["a"].audio).endswith("a.wav")
    assert any("clip b" in n for n in notes) and any("c" in n and "no generated video" in n for n in notes)
    with pytest.raises(InputError, match="no ground truth for generated clip b"):
        discover_pairs(gen, gt, require_gt=True)
    with pytest.raises(InputError, match="not a folder"):
        discover_pairs(tmp_path / "missing", gt)


def test_eval_config_composes_and_builds_every_metric(tmp_path):
    from hydra import compose, initialize_config_dir

    from vexpress.cli._common import config_path
    from vexpress.evaluation.specs import build_specs

    overrides = [f"output_dir={tmp_path}", f"cache_dir={tmp_path / 'c'}", f"pretrained_dir={tmp_path / 'p'}"]
    with initialize_config_dir(config_dir=config_path(), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=overrides + ["metrics.identity.frame_stride=2"])
    from omegaconf import OmegaConf

    specs = build_specs(OmegaConf.to_container(cfg.metrics, resolve=True))
    assert {s.name for s in specs} == {"fid", "fvd", "syncnet", "kps", "lmd", "lipsync", "identity", "synthetic"}
    ident = next(s for s in specs if s.name == "identity")
    assert ident.frame_stride == 2
    assert next(s for s in specs if s.name == "fid").weights_path.endswith("weights-inception-2015-12-05-6726825d.pth")


def test_in_memory_frames_layouts_and_ranges():
    import torch

    from vexpress.evaluation.media import Video, as_uint8_frames

    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, size=(4, 8, 10, 3), dtype=np.uint8)
    unit = torch.from_numpy(ref).float() / 255.0
    np.testing.assert_array_equal(as_uint8_frames(unit), ref)  # (T, H, W, 3) in [0, 1]
    np.testing.assert_array_equal(as_uint8_frames(unit.permute(0, 3, 1, 2) * 2 - 1), ref)  # (T, 3, H, W), [-1, 1]
    np.testing.assert_array_equal(as_uint8_frames(unit.permute(3, 0, 1, 2).numpy()), ref)  # (3, T, H, W)
    assert Video(frames_=unit, fps_=25).size == (10, 8)
    with pytest.raises(InputError, match="fps"):
        Video(frames_=ref)
