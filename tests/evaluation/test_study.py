"""The multi-seed study: paired recipe-minus-ablation differences, crossed bootstrap intervals, verdicts, goals, CLI.

Made-up demo reports (5 seeds x 24 clips) with known differences: every noise term is centred to mean 0 over the
seed x clip grid, so the true mean differences are exact.
"""

import json
import time

import numpy as np
import pytest

from vexpress.errors import InputError
from vexpress.evaluation import study as st

SEEDS, CLIPS = (7, 8, 9, 10, 11), [f"clip_{i:02d}" for i in range(24)]
A, B = "progressive_no_dropout", "joint_only"
VAE_FLOOR = {"mouth_err": 0.05, "identity_err": 0.02, "pose_err": 0.8, "mouth_corr": 0.9}

# recipe - ablation, the truth built into the reports
TRUE = {
    A: {"mouth_err_correct": -0.02, "mouth_err_shuffled": 0.05, "audio_gap": 0.07, "identity_err": 0.01,
        "pose_err": 0.0},
    B: {"mouth_err_correct": 0.0, "mouth_err_shuffled": -0.05, "audio_gap": -0.05, "identity_err": 0.0,
        "pose_err": 0.0},
}
EXPECTED = {
    A: {"mouth_err_correct": "better", "mouth_err_shuffled": "better", "audio_gap": "better",
        "identity_err": "worse", "pose_err": "no difference"},
    B: {"mouth_err_correct": "no difference", "mouth_err_shuffled": "worse", "audio_gap": "worse",
        "identity_err": "no difference", "pose_err": "no difference"},
}


def _centred(rng, sd, seed_sd=0.0):
    """Noise over [seed, clip] with an optional per-seed offset, centred to mean exactly 0."""
    x = rng.normal(0.0, sd, (len(SEEDS), len(CLIPS))) + rng.normal(0.0, seed_sd, (len(SEEDS), 1))
    return x - x.mean()


def _grids():
    """run -> field -> array [seed, clip]."""
    rng = np.random.default_rng(123)
    a = {"mouth_err_correct": 0.10 + _centred(rng, 0.01, 0.005), "mouth_err_shuffled": 0.20 + _centred(rng, 0.02),
         "identity_err": 0.02 + _centred(rng, 0.001), "pose_err": 1.0 + _centred(rng, 0.05)}
    recipe = {
        # 20 % lower mouth error than A, small noise (and a small per-seed effect)
        "mouth_err_correct": a["mouth_err_correct"] - 0.02 + _centred(rng, 0.003, 0.001),
        "mouth_err_shuffled": a["mouth_err_shuffled"] + 0.05 + _centred(rng, 0.005),
        "identity_err": a["identity_err"] + 0.01 + _centred(rng, 0.001),  # clearly worse identity
        "pose_err": a["pose_err"] + _centred(rng, 0.02),
    }
    b = {  # equal to the recipe in expectation, with noise; the recipe's shuffled error is lower (worse)
        "mouth_err_correct": recipe["mouth_err_correct"] + _centred(rng, 0.01, 0.003),
        "mouth_err_shuffled": recipe["mouth_err_shuffled"] + 0.05 + _centred(rng, 0.005),
        "identity_err": recipe["identity_err"] + _centred(rng, 0.001),
        "pose_err": recipe["pose_err"] + _centred(rng, 0.05),
    }
    stage = {k: v + 1.0 for k, v in recipe.items()}  # an earlier-stage export: must be ignored
    return {"recipe": recipe, A: a, B: b, "recipe/1_image": stage}


def _report(grids, i, seed=None, clips=None, roles=None):
    clips = CLIPS if clips is None else clips
    evals = {}
    for run, g in grids.items():
        per_clip = {c: {m: float(g[m][i, CLIPS.index(c)]) for m in st.CLIP_FIELDS} for c in clips}
        evals[run] = {"mouth_err_correct": float(g["mouth_err_correct"][i].mean()), "per_clip": per_clip}
    rep = {"format": "vexpress-demo-report", "version": 1, "train_seed": SEEDS[i] if seed is None else seed,
           "evaluation": evals, "vae_floor": dict(VAE_FLOOR)}
    if roles is not None:
        rep["roles"] = roles
    return rep


def _write(tmp_path, reports):
    paths = []
    for i, rep in enumerate(reports):
        p = tmp_path / f"seed_{i}" / "report.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(rep))
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def grids():
    return _grids()


@pytest.fixture
def report_paths(tmp_path, grids):
    return _write(tmp_path, [_report(grids, i) for i in range(len(SEEDS))])


def test_direction_table_covers_the_metrics():
    assert st.DIRECTIONS == {"mouth_err_correct": "lower", "mouth_err_shuffled": "higher", "audio_gap": "higher",
                             "identity_err": "lower", "pose_err": "lower"}
    assert st.verdict(-0.3, -0.1, "lower") == "better" and st.verdict(0.1, 0.3, "lower") == "worse"
    assert st.verdict(0.1, 0.3, "higher") == "better" and st.verdict(-0.3, -0.1, "higher") == "worse"
    assert st.verdict(-0.1, 0.1, "lower") == st.verdict(-0.1, 0.1, "higher") == "no difference"


def test_load_aligns_runs_roles_and_ignores_stage_exports(report_paths, grids):
    data = st.load_reports(report_paths)
    assert data.seeds == list(SEEDS) and data.clips == CLIPS
    assert data.recipe == "recipe" and sorted(data.ablations) == sorted([A, B])
    assert "recipe/1_image" not in data.values
    np.testing.assert_allclose(data.values[A]["mouth_err_correct"], grids[A]["mouth_err_correct"])
    np.testing.assert_allclose(data.values["recipe"]["audio_gap"],
                               grids["recipe"]["mouth_err_shuffled"] - grids["recipe"]["mouth_err_correct"])


def test_means_intervals_and_verdicts(report_paths):
    study = st.analyze(st.load_reports(report_paths), resamples=4000, seed=0)
    assert study["n_seeds"] == 5 and study["n_clips"] == 24
    for ab, truth in TRUE.items():
        for m, true in truth.items():
            c = study["comparisons"][ab][m]
            assert c["mean_diff"] == pytest.approx(true, abs=1e-12), (ab, m)
            assert c["ci_low"] <= true <= c["ci_high"], (ab, m, c)
            assert c["ci_low"] < c["ci_high"]
            assert c["direction"] == st.DIRECTIONS[m]
            assert c["verdict"] == EXPECTED[ab][m], (ab, m, c)
            assert np.mean(c["per_seed_mean_diff"]) == pytest.approx(true, abs=1e-12)
    # the shuffled metric is higher-is-better: a higher shuffled error of the recipe is "better", a lower "worse"
    assert study["comparisons"][A]["mouth_err_shuffled"]["mean_diff"] > 0
    assert study["comparisons"][A]["mouth_err_shuffled"]["verdict"] == "better"
    assert study["comparisons"][B]["mouth_err_shuffled"]["mean_diff"] < 0
    assert study["comparisons"][B]["mouth_err_shuffled"]["verdict"] == "worse"


def test_per_run_means_sd_ratio_and_goals(report_paths, grids):
    study = st.analyze(st.load_reports(report_paths), resamples=500)
    rec = study["runs"]["recipe"]
    assert rec["role"] == "recipe" and study["runs"][A]["role"] == "ablation"
    assert rec["metrics"]["mouth_err_correct"]["mean"] == pytest.approx(0.08, abs=1e-12)
    assert study["runs"][A]["metrics"]["mouth_err_correct"]["mean"] == pytest.approx(0.10, abs=1e-12)
    assert rec["metrics"]["identity_err"]["mean"] == pytest.approx(0.03, abs=1e-12)
    per_seed = grids["recipe"]["mouth_err_correct"].mean(axis=1)
    assert rec["metrics"]["mouth_err_correct"]["per_seed"] == pytest.approx(per_seed.tolist())
    assert rec["metrics"]["mouth_err_correct"]["sd_seeds"] == pytest.approx(per_seed.std(ddof=1))
    ratios = grids["recipe"]["mouth_err_shuffled"].mean(axis=1) / per_seed
    assert rec["ratio"]["per_seed"] == pytest.approx(ratios.tolist())
    assert rec["ratio"]["pooled"] == pytest.approx(0.25 / 0.08)
    g = rec["goals"]
    assert g["mouth_err_correct"]["limit"] == pytest.approx(st.GOAL_MOUTH_OVER_FLOOR * 0.05)
    assert g["mouth_err_correct"]["met"] is True and g["mouth_err_correct"]["seeds_met"] == 5
    assert g["identity_err"]["limit"] == pytest.approx(st.GOAL_IDENTITY_OVER_FLOOR * 0.02)
    assert g["identity_err"]["met"] is False and g["identity_err"]["seeds_met"] == 0  # 0.03 > 0.026
    assert g["ratio"]["met"] is True and g["ratio"]["limit"] == st.GOAL_RATIO_MIN
    assert g["pose_err"]["met"] is True and g["pose_err"]["limit"] == st.GOAL_POSE_MAX_PX


def test_crossed_bootstrap_is_the_mean_over_the_resampled_grid():
    rng = np.random.default_rng(1)
    d = rng.normal(size=(5, 24))
    ws, wc = st.crossed_bootstrap_weights(5, 24, resamples=50, seed=3)
    assert (ws.sum(axis=1) == 5).all() and (wc.sum(axis=1) == 24).all()
    fast = st.bootstrap_means(d, (ws, wc))
    for b in range(50):
        si = np.repeat(np.arange(5), ws[b].astype(int))
        ci = np.repeat(np.arange(24), wc[b].astype(int))
        assert fast[b] == pytest.approx(d[np.ix_(si, ci)].mean())
    # a fixed seed gives the same interval; another seed a (slightly) different one
    assert st.bootstrap_interval(d, 1000, seed=5) == st.bootstrap_interval(d, 1000, seed=5)
    assert st.bootstrap_interval(d, 1000, seed=5) != st.bootstrap_interval(d, 1000, seed=6)


def test_ten_thousand_resamples_are_fast():
    d = np.random.default_rng(0).normal(size=(5, 24))
    t = time.perf_counter()
    st.bootstrap_interval(d, resamples=10000, seed=0)
    assert time.perf_counter() - t < 2.0  # well under a second on an idle core


def test_mismatched_clips_are_refused(tmp_path, grids):
    reps = [_report(grids, i) for i in range(5)]
    reps[3] = _report(grids, 3, clips=CLIPS[:-1])
    paths = _write(tmp_path, reps)
    with pytest.raises(InputError, match="seed_3") as err:
        st.load_reports(paths)
    assert "\n" not in str(err.value) and "same held-out clips" in str(err.value)


def test_duplicated_seeds_are_refused(tmp_path, grids):
    reps = [_report(grids, i) for i in range(5)]
    reps[4] = _report(grids, 4, seed=SEEDS[1])
    paths = _write(tmp_path, reps)
    with pytest.raises(InputError, match="seed_4.*train_seed 8.*seed_1"):
        st.load_reports(paths)


def test_roles_from_the_report_and_mismatched_roles(tmp_path, grids):
    roles = {"recipe": "recipe", A: "ablation"}
    data = st.load_reports(_write(tmp_path / "ok", [_report(grids, i, roles=roles) for i in range(5)]))
    assert data.ablations == [A] and B not in data.values
    reps = [_report(grids, i, roles=roles) for i in range(5)]
    reps[2] = _report(grids, 2)  # no roles: the recipe and two ablations
    with pytest.raises(InputError, match="seed_2.*same experiment"):
        st.load_reports(_write(tmp_path / "bad", reps))
    with pytest.raises(InputError, match="exactly one"):
        st.reports_to_data([_report(grids, 0, roles={A: "ablation", B: "ablation"})])


def test_cli_writes_both_files(report_paths, tmp_path, capsys):
    out = tmp_path / "study"
    rc = st.main([*map(str, report_paths), "--out", str(out), "--resamples", "2000", "--seed", "1"])
    assert rc == 0
    study = json.loads((out / "study.json").read_text())
    assert study["bootstrap"]["resamples"] == 2000 and study["bootstrap"]["seed"] == 1
    assert study["comparisons"][A]["mouth_err_correct"]["verdict"] == "better"
    md = (out / "study.md").read_text()
    assert f"## recipe minus {A}" in md and f"## recipe minus {B}" in md
    assert "| mouth err (correct audio) | lower |" in md and "| mouth err (shuffled audio) | higher |" in md
    assert "5 training seeds" in md and "24 held-out clips" in md
    assert sorted(p.name for p in out.iterdir()) == ["study.json", "study.md"]  # no temporary files left


def test_cli_bad_input_is_one_line_and_writes_nothing(report_paths, tmp_path, capsys):
    out = tmp_path / "study"
    assert st.main([str(report_paths[0]), str(report_paths[0]), "--out", str(out), "--min-seeds", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "train_seed" in err
    assert not out.exists()
    assert st.main([*map(str, report_paths[:3]), "--out", str(out)]) == 2  # fewer than MIN_SEEDS
    assert "at least 5" in capsys.readouterr().err and not out.exists()
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    assert st.main([*map(str, report_paths), str(bad), "--out", str(out)]) == 2
    assert "broken.json" in capsys.readouterr().err and not out.exists()
