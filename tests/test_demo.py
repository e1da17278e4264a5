"""`make demo` end to end at a toy budget: every phase runs and the report (md, json, png) and video are written.

The real budget and its figures are in the report of a full `make demo`; this only checks the machinery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vexpress.utils.paths import REPO_ROOT
from tests.training.cli_helpers import SMALL_DATA


@pytest.mark.slow
def test_demo_smoke(tmp_path):
    data = [*SMALL_DATA, "data.synthetic.num_identities=4", "data.synthetic.heldout_identities=2"]
    train = ",".join(f'"{o}"' for o in [*data, "trainer.max_steps=2"])
    cmd = [sys.executable, "-m", "vexpress.cli.demo", f"output_dir={tmp_path / 'out'}",
           f"paths.cache_dir={tmp_path / 'cache'}", f"paths.root_dir={REPO_ROOT}", f"train_overrides=[{train}]",
           "vae.steps=3", "eval.clips=2", "eval.frames=4", "eval.num_inference_steps=2", "eval.frame_stride=2",
           "probe.clips=1", "probe.frames=2", "sample_video.seconds=0.2", "threads=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert set(report["evaluation"]) >= {"recipe", "joint_only", "progressive_no_dropout"}
    for e in report["evaluation"].values():
        assert {"mouth_err_correct", "mouth_err_shuffled", "ratio", "identity_err", "pose_err"} <= set(e)
    assert [r["stage"] for r in report["probe"]["recipe"]] == ["image", "audio_motion", "joint"]
    assert report["probe"]["recipe"][0]["audio"] == 0.0
    # the image stage of the progressive ablation is the recipe's (identical config): trained once
    assert report["train"]["progressive_no_dropout"][0].get("skipped")
    for name in ("report.md", "report.png", "sample.mp4"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    print("demo smoke phases:", {k: round(v, 1) for k, v in report["seconds"].items()})
