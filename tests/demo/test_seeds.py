"""Summarising several demo runs over training seeds (vexpress.demo.seeds)."""

from __future__ import annotations

import json
import math

import pytest

from vexpress.demo.report import goals, paired_table
from vexpress.demo.seeds import aggregate, main


def _report(seed: int, recipe_mouth: list[float], ablation_mouth: list[float], ratio: float) -> dict:
    """A demo report as run_demo builds it (evaluation rows with per-clip errors, goals, paired table)."""

    def row(mouth: list[float], r: float) -> dict:
        per_clip = {f"c{i}": {"mouth_err_correct": m, "mouth_err_shuffled": m * r, "identity_err": 0.1,
                              "pose_err": 2.0} for i, m in enumerate(mouth)}
        mean = sum(mouth) / len(mouth)
        return {"mouth_err_correct": mean, "mouth_err_shuffled": mean * r, "ratio": r, "identity_err": 0.1,
                "pose_err": 2.0, "per_clip": per_clip}

    evals = {"recipe": row(recipe_mouth, ratio), "joint_only": row(ablation_mouth, 1.0)}
    roles = {"recipe": "recipe", "joint_only": "ablation"}
    g = goals(evals, roles, {"ratio_min": 1.5, "no_worse_tolerance": 0.05})
    return {"train_seed": seed, "evaluation": evals, "goals": g, "paired": paired_table(evals, roles),
            "roles": roles, "protocol": {"clips": 3}}


def test_mean_sd_over_seeds_and_paired_differences():
    reports = [_report(7, [0.10, 0.12, 0.14], [0.11, 0.13, 0.15], 1.6),
               _report(8, [0.20, 0.22, 0.24], [0.19, 0.21, 0.23], 1.2)]
    agg = aggregate(reports)
    assert agg["seeds"] == [7, 8]
    mouth = agg["runs"]["recipe"]["mouth_err_correct"]
    assert mouth["n"] == 2 and mouth["mean"] == pytest.approx(0.17)
    assert mouth["sd"] == pytest.approx(math.sqrt(2) * 0.05)
    assert agg["runs"]["recipe"]["ratio"]["values"] == [1.6, 1.2]
    assert agg["paired_mouth_err_correct"]["joint_only"]["values"] == pytest.approx([-0.01, 0.01])
    assert agg["recipe_uses_audio"] == [True, False]


def test_cli_writes_table_and_rejects_unreadable_reports(tmp_path, capsys):
    paths = []
    for seed in (1, 2):
        p = tmp_path / f"seed_{seed}" / "report.json"
        p.parent.mkdir()
        p.write_text(json.dumps(_report(seed, [0.1, 0.2], [0.1, 0.3], 1.5)))
        paths.append(str(p))
    assert main([*paths, "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "seeds.md").read_text()
    assert "Seeds: 1, 2" in md and "| recipe |" in md
    assert json.loads((tmp_path / "out" / "seeds.json").read_text())["runs"]["joint_only"]["ratio"]["mean"] == 1.0
    assert main([str(tmp_path / "missing.json"), "--out", str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read demo report")
    assert not (tmp_path / "o2").exists()
