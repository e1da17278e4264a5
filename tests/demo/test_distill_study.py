"""Issue 11's few-step study harness (``python -m vexpress.demo.distill``) end to end on a toy demo output.

The figures of a real run are in ``experiments/distill/README.md``; this only checks the machinery: the student is
distilled from the recipe's export, teacher and students are evaluated on the demo report's clips, and the report
has every row with finite numbers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.training.cli_helpers import SMALL_DATA
from vexpress.utils.paths import REPO_ROOT


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


@pytest.mark.slow
def test_distill_study_on_a_toy_demo(tmp_path):
    from tests.helpers.tiny import random_demo_foundation

    # the demo smoke recipe (tests/demo/test_demo.py), with the recipe run only and no sample video
    random_demo_foundation(tmp_path / "foundation")
    data = [*SMALL_DATA, "data.synthetic.num_identities=4", "data.synthetic.heldout_identities=2"]
    train = ",".join(f'"{o}"' for o in [*data, "trainer.max_steps=2"])
    demo_overrides = [f"paths.cache_dir={tmp_path / 'cache'}", f"paths.root_dir={REPO_ROOT}",
                      f"train_overrides=[{train}]", f"foundation={tmp_path / 'foundation'}", "eval.first_clip=0",
                      "eval.clips=50", "eval.frames=4", "eval.num_inference_steps=2", "eval.frame_stride=2",
                      "threads=1"]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    demo = [sys.executable, "-m", "vexpress.cli.demo", f"output_dir={out}", *demo_overrides,
            "~runs.progressive_no_dropout", "~runs.joint_only", "probe.clips=1", "probe.frames=2",
            "sample_video.enabled=false"]
    proc = subprocess.run(demo, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    demo_report = json.loads((out / "report.json").read_text())

    study = [sys.executable, "-m", "vexpress.demo.distill", "--demo-output", str(out), *demo_overrides,
             "--steps", "2", "--teacher-steps", "2", "--student-steps", "1", "2"]
    proc = subprocess.run(study, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "distill" / "report.json").read_text())

    assert list(report["rows"]) == ["teacher", "student_1", "student_2"]
    teacher = report["rows"]["teacher"]
    assert (teacher["sampler"], teacher["steps"], teacher["guidance_scale"]) == ("ddim", 2, 3.5)
    assert teacher["export"].endswith("runs/recipe/stages/2_joint/export")
    expected_passes = {"teacher": 4, "student_1": 1, "student_2": 2}  # steps x branches (2 with guidance, else 1)
    for label, row in report["rows"].items():
        assert row["unet_passes_per_frame"] == expected_passes[label]
        assert row["unet_passes_per_frame_measured"] == pytest.approx(expected_passes[label])
        assert row["clips"] == 2 and row["frames"] == 4 and row["frames_generated"] == 2 * 2 * 4
        for key in ("mouth_err_correct", "mouth_err_shuffled", "ratio", "identity_err", "pose_err",
                    "generate_seconds", "frames_per_second", "unet_seconds"):
            assert _finite(row[key]), (label, key, row[key])
        if label != "teacher":
            assert (row["sampler"], row["guidance_scale"], row["branches"]) == ("lcm", 1.0, ["cond"])
            rel = row["vs_teacher"]
            for key in ("mouth_err_correct", "mouth_err_shuffled", "ratio", "identity_err", "pose_err", "speedup"):
                assert _finite(rel[key]), (label, key, rel[key])
            assert rel["paired"]["mouth_err_correct"]["n"] == 2
    # the demo report's clips, the student trained from the recipe's export
    assert report["protocol"]["clip_ids"] == demo_report["protocol"]["clip_ids"]
    assert report["training"]["global_step"] == 2 and not report["training"]["skipped"]
    assert (out / "distill" / "student" / "stages" / "0_distill" / "export" / "DONE").is_file()
    assert report["done"] == {"student": None, "evaluated": False, "all_met": None,
                              "note": "no 4-step student was evaluated (--student-steps)"}
    md = (out / "distill" / "report.md").read_text()
    assert all(f"| {label} (" in md for label in report["rows"])
    print("distill study phases:", {k: round(v, 1) for k, v in report["seconds"].items()})


def test_done_means_checks_the_four_step_student_against_the_teacher():
    from vexpress.demo.distill import done_means, vs_teacher

    def row(mouth, identity, pose, ratio, seconds, passes):
        per_clip = {c: {"mouth_err_correct": mouth, "mouth_err_shuffled": mouth * ratio, "identity_err": identity,
                        "pose_err": pose} for c in ("c0", "c1")}
        return {"mouth_err_correct": mouth, "mouth_err_shuffled": mouth * ratio, "ratio": ratio,
                "identity_err": identity, "pose_err": pose, "generate_seconds": seconds, "unet_seconds": seconds / 2,
                "unet_passes_per_frame": passes, "per_clip": per_clip}

    teacher = row(0.10, 0.10, 1.0, 2.0, 100.0, 50)
    rows = {"teacher": teacher, "student_4": row(0.109, 0.05, 1.1, 1.8, 12.5, 4)}
    rows["student_4"]["vs_teacher"] = vs_teacher(rows["student_4"], teacher)
    rel = rows["student_4"]["vs_teacher"]
    assert rel["speedup"] == pytest.approx(8.0) and rel["unet_passes_ratio"] == pytest.approx(12.5)
    assert rel["paired"]["mouth_err_correct"]["mean"] == pytest.approx(0.009)
    done = done_means(rows, "student_4")
    assert done["all_met"] and set(done["checks"]) == {"mouth_err_correct", "identity_err", "pose_err", "ratio",
                                                       "speedup"}
    # each limit on its own: errors 1.1x, ratio 0.9x, 8x faster; a missing figure never meets a limit
    for change, failed in [({"mouth_err_correct": 0.111}, "mouth_err_correct"), ({"pose_err": 1.2}, "pose_err"),
                           ({"ratio": 1.7}, "ratio"), ({"generate_seconds": 13.0}, "speedup"),
                           ({"identity_err": None}, "identity_err")]:
        student = {**rows["student_4"], **change}
        student["vs_teacher"] = vs_teacher(student, teacher)
        done = done_means({"teacher": teacher, "student_4": student}, "student_4")
        assert not done["all_met"] and [k for k, c in done["checks"].items() if not c["met"]] == [failed]
    assert done_means(rows, None)["evaluated"] is False
