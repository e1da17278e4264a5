"""Videos that cannot be scored: counted out of the summary, named with the reason, and an evaluation where nothing
was scored fails (one line, exit code 2) instead of reporting an empty table."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.evaluation.test_cli import _cli
from vexpress.data.video import write_video
from vexpress.errors import InputError
from vexpress.evaluation.pairs import discover_pairs
from vexpress.evaluation.report import GT_ROW
from vexpress.evaluation.runner import evaluate_videos
from vexpress.evaluation.specs import KpsDisSpec, LMDSpec


def _gt_and_generated(records, root: Path, corrupt: set) -> tuple[Path, Path]:
    gt_dir, gen_dir = root / "gt", root / "gen"
    gt_dir.mkdir(parents=True, exist_ok=True)
    gen_dir.mkdir(parents=True, exist_ok=True)
    for rec in records:
        shutil.copy(rec.video, gt_dir / f"{rec.id}.mp4")
        if rec.id in corrupt:
            (gen_dir / f"{rec.id}.mp4").write_bytes(b"not a video " * 100)
        else:
            frames = rec.frames(range(rec.num_frames))
            write_video(gen_dir / f"{rec.id}.mp4", np.clip(frames.astype(np.int16) + 8, 0, 255).astype(np.uint8),
                        rec.fps)
    return gt_dir, gen_dir


def test_generated_videos_matching_no_ground_truth_are_refused(tmp_path):
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    for cid in ("x", "y"):
        write_video(tmp_path / "gen" / f"{cid}.mp4", frames, 25)
    write_video(tmp_path / "gt" / "a.mp4", frames, 25)
    with pytest.raises(InputError) as err:
        discover_pairs(tmp_path / "gen", tmp_path / "gt")
    msg = str(err.value)
    assert "none of the 2 generated videos" in msg and "generated: x, y" in msg and "ground truth: a" in msg


@pytest.mark.slow
def test_a_corrupt_generated_video_is_named_and_not_counted(synth_records, tmp_path):
    recs = synth_records[:2]
    bad = recs[1].id
    gt_dir, gen_dir = _gt_and_generated(recs, tmp_path, {bad})
    pairs, _ = discover_pairs(gen_dir, gt_dir)
    res = evaluate_videos(pairs, [LMDSpec(), KpsDisSpec()], run_name="gen", output_dir=tmp_path / "out")
    assert res.summary["gen"]["clips"] == 1 and res.summary[GT_ROW]["clips"] == 2
    assert res.stats["gen"]["lmd"]["n"] == 1 and res.scored("gen") == 1
    assert [(u["clip_id"], u["row"]) for u in res.unscored] == [(bad, "gen")]
    assert "cannot open" in res.unscored[0]["reason"] and f"{bad}.mp4" in res.unscored[0]["reason"]
    assert {r["clip_id"] for r in res.rows if r["row"] == "gen"} == {recs[0].id}
    paths = res.write(tmp_path / "out")
    md = paths["markdown"].read_text()
    assert "2 generated videos (1 scored)" in md and "## Not scored" in md and f"- {bad} (gen): cannot open" in md
    data = json.loads(paths["json"].read_text())
    assert data["not_scored"][0]["clip_id"] == bad and data["meta"]["generated_scored"] == 1
    # resume: the unit of the corrupt video is reused and still reported as not scored
    res2 = evaluate_videos(pairs, [LMDSpec(), KpsDisSpec()], run_name="gen", output_dir=tmp_path / "out")
    assert res2.unscored == res.unscored and res2.summary["gen"]["clips"] == 1


def test_nothing_scored_is_an_error(synth_records, tmp_path):
    recs = synth_records[:1]
    gt_dir, gen_dir = _gt_and_generated(recs, tmp_path, {recs[0].id})
    pairs, _ = discover_pairs(gen_dir, gt_dir)
    with pytest.raises(InputError, match="nothing was scored: none of the 1 generated videos") as err:
        evaluate_videos(pairs, [LMDSpec()], run_name="gen")
    assert "cannot open" in str(err.value)


@pytest.mark.slow
def test_nothing_scored_on_the_command_line(synth_records, tmp_path):
    """One error line, exit code 2, the reason; for a corrupt video and for names matching no ground truth."""
    recs = synth_records[:1]
    gt_dir, gen_dir = _gt_and_generated(recs, tmp_path, {recs[0].id})
    proc = _cli([f"generated_dir={gen_dir}", f"gt_dir={gt_dir}", "metrics=[lmd]", "wandb.enabled=false",
                 f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "nothing was scored" in lines[0] and "cannot open" in lines[0]
    other = tmp_path / "other_gt"
    write_video(other / "zzz.mp4", np.zeros((3, 16, 16, 3), np.uint8), 25)
    proc = _cli([f"generated_dir={gen_dir}", f"gt_dir={other}", "metrics=[lmd]", "wandb.enabled=false",
                 f"hydra.run.dir={tmp_path / 'run2'}"], tmp_path)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "none of the 1 generated videos" in lines[0], proc.stderr
    assert not (tmp_path / "run" / "eval_summary.json").exists()
