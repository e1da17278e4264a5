"""``experiments/demo/compare_studies.py`` on made-up studies whose differences are known: paired by seed and clip
(both studies kept their seed reports) and by seed only (one kept just its ``study.json``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np

from vexpress.utils.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "experiments" / "demo" / "compare_studies.py"
FIELDS = ("mouth_err_correct", "mouth_err_shuffled", "identity_err", "pose_err")
SEEDS = (7, 8, 9)
CLIPS = ("c0", "c1", "c2", "c3")


def _values(shift: float) -> dict[int, dict[str, dict[str, float]]]:
    rng = np.random.default_rng(0)   # the same draw for both studies: only `shift` differs
    return {s: {c: {f: float(rng.uniform(0.02, 0.04)) + (shift if f == "mouth_err_correct" else 0.0)
                    for f in FIELDS} for c in CLIPS} for s in SEEDS}


def _write_reports(root, shift):
    for s, per_clip in _values(shift).items():
        (root / f"seed_{s}").mkdir(parents=True)
        (root / f"seed_{s}" / "report.json").write_text(json.dumps({"evaluation": {"recipe": {"per_clip": per_clip}}}))


def _write_summary(root, shift):
    values = _values(shift)
    metrics = {f: {"per_seed": [float(np.mean([values[s][c][f] for c in CLIPS])) for s in SEEDS]} for f in FIELDS}
    shuffled, correct = metrics["mouth_err_shuffled"]["per_seed"], metrics["mouth_err_correct"]["per_seed"]
    ratio = [sh / co for sh, co in zip(shuffled, correct)]
    root.mkdir(parents=True)
    (root / "study.json").write_text(json.dumps({"seeds": list(SEEDS), "runs": {
        "recipe": {"metrics": metrics, "ratio": {"per_seed": ratio}}}}))


def _run(old, new) -> str:
    out = subprocess.run([sys.executable, str(SCRIPT), str(old), str(new)], capture_output=True, text=True,
                         cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _row(text: str, field: str) -> tuple[float, float, float]:
    m = re.search(rf"recipe\s+{field}\s+old \S+ new \S+ diff (\S+) \[(\S+), (\S+)\]", text)
    assert m, text
    return tuple(float(x) for x in m.groups())


def test_paired_by_seed_and_clip(tmp_path):
    _write_reports(tmp_path / "old", 0.0)
    _write_reports(tmp_path / "new", -0.005)
    text = _run(tmp_path / "old", tmp_path / "new")
    assert "paired by seed and clip" in text
    mean, lo, hi = _row(text, "mouth_err_correct")
    assert abs(mean + 0.005) < 1e-9 and abs(lo + 0.005) < 1e-9 and abs(hi + 0.005) < 1e-9
    assert _row(text, "identity_err") == (0.0, 0.0, 0.0)


def test_a_study_with_only_its_summary_pairs_by_seed(tmp_path):
    _write_summary(tmp_path / "old", 0.0)
    _write_summary(tmp_path / "new_summary", -0.005)
    _write_reports(tmp_path / "new", -0.005)   # a study's folder holds both; the by-seed mode reads the summary
    (tmp_path / "new" / "study.json").write_text((tmp_path / "new_summary" / "study.json").read_text())
    for new in (tmp_path / "new", tmp_path / "new_summary"):
        text = _run(tmp_path / "old", new)
        assert "paired by seed only" in text
        mean, lo, hi = _row(text, "mouth_err_correct")
        assert abs(mean + 0.005) < 1e-9 and lo <= mean <= hi
        assert "negative in 3 of 3 seeds" in text.splitlines()[1]
        assert _row(text, "pose_err")[0] == 0.0
        ratio_mean = _row(text, "ratio")[0]
        assert ratio_mean > 0            # a lower correct-audio error raises shuffled / correct
