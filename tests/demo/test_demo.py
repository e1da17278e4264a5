"""`make demo` end to end at a toy budget: every phase runs and the report (md, json, png) and video are written.

The real budget and its figures are in the report of a full `make demo`; this only checks the machinery.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.tiny import random_demo_foundation
from tests.training.cli_helpers import SMALL_DATA
from vexpress.utils.paths import REPO_ROOT


@pytest.mark.slow
def test_demo_smoke(tmp_path):
    random_demo_foundation(tmp_path / "foundation")
    data = [*SMALL_DATA, "data.synthetic.num_identities=4", "data.synthetic.heldout_identities=2"]
    train = ",".join(f'"{o}"' for o in [*data, "trainer.max_steps=2"])
    cmd = [sys.executable, "-m", "vexpress.cli.demo", f"output_dir={tmp_path / 'out'}",
           f"paths.cache_dir={tmp_path / 'cache'}", f"paths.root_dir={REPO_ROOT}", f"train_overrides=[{train}]",
           f"foundation={tmp_path / 'foundation'}", "eval.first_clip=0", "eval.clips=50", "eval.frames=4",
           "eval.num_inference_steps=2", "eval.frame_stride=2", "eval.audio_attention_weight_low_noise=0.5",
           "probe.clips=1", "probe.frames=2", "sample_video.seconds=0.2", "threads=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert set(report["evaluation"]) >= {"recipe", "joint_only", "progressive_no_dropout"}
    assert report["roles"] == {"recipe": "recipe", "progressive_no_dropout": "ablation", "joint_only": "ablation"}
    assert set(report["paired"]) == {"progressive_no_dropout", "joint_only"}
    for e in report["evaluation"].values():
        assert {"mouth_err_correct", "mouth_err_shuffled", "ratio", "identity_err", "pose_err"} <= set(e)
    assert [r["stage"] for r in report["probe"]["recipe"]] == ["image", "audio_motion", "joint"]
    assert report["probe"]["recipe"][0]["audio"] == 0.0
    assert report["vae"]["source"] == str(tmp_path / "foundation")
    assert {"identity_err", "mouth_err_correct", "ratio", "pose_err", "all_met"} <= set(report["goals"])
    # the image stage of the progressive ablation is the recipe's (identical config): trained once
    assert report["train"]["progressive_no_dropout"][0].get("skipped")
    # the report states what was scored: 2 held-out clips exist, 50 were asked for
    assert report["protocol"]["clips"] == 2 and report["protocol"]["clips_requested"] == 50
    assert report["protocol"]["frames"] == 4 and len(report["protocol"]["clip_ids"]) == 2
    # the sampler's options reach the report (2 DDIM steps: timesteps 999 and 499, one on each side of 500)
    assert report["protocol"]["audio_attention_weight_low_noise"] == 0.5
    assert report["protocol"]["low_noise_timestep"] == 500
    assert all(e["clips"] == 2 for e in report["evaluation"].values())
    assert "2 held-out clips x 4 frames evaluated per run (eval.clips=50 requested)" in (out / "report.md").read_text()
    assert (out / "demo.log").is_file()
    # workers=2 (the default): every training, evaluation and probe ran as a job in one of two processes, each job
    # writing its own console log, each timed in the report
    for run in ("recipe", "progressive_no_dropout", "joint_only"):
        assert "stage" in (out / "runs" / f"train_{run}.log").read_text()
        assert (out / "runs" / f"probe_{run}.log").is_file()
        assert {f"train/{run}", f"evaluate/{run}", f"probe/{run}"} <= set(report["seconds"])
    for label in ("recipe", "progressive_no_dropout", "joint_only"):
        assert (out / "eval" / f"{label}.log").is_file() and (out / "eval" / label / "per_clip.csv").is_file()
    for name in ("report.md", "report.png", "sample.mp4"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    print("demo smoke phases:", {k: round(v, 1) for k, v in report["seconds"].items()})

    # workers=1: the same jobs one after the other in the demo's own process score exactly the same (the order and
    # the process a job runs in change nothing); data and latents come from the cache
    one = tmp_path / "one_process"
    cmd = [*[c for c in cmd if not c.startswith("output_dir=")], f"output_dir={one}", "workers=1"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    again = json.loads((one / "report.json").read_text())
    assert again["evaluation"] == report["evaluation"] and again["probe"] == report["probe"]
    assert not list((one / "runs").glob("train_*.log"))  # nothing ran in a worker process
    assert again["data"]["eval_root"] == report["data"]["root"]  # eval.heldout_data null: the training data's

    # eval.heldout_data: the held-out split of another synthetic set is scored (exploration's own clips); training
    # still reads the training data, so the copied runs' stages are reused (their keys match)
    other = tmp_path / "other_set"
    shutil.copytree(one / "runs", other / "runs")
    cmd = [*[c for c in cmd if not c.startswith("output_dir=")], f"output_dir={other}",
           "eval.heldout_data={seed:5,num_identities:3,heldout_identities:2}"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    third = json.loads((other / "report.json").read_text())
    from vexpress.data.records import load_manifest

    assert third["data"]["root"] == report["data"]["root"] and third["data"]["eval_root"] != report["data"]["root"]
    held = load_manifest(third["data"]["eval_root"], split="heldout")
    assert third["protocol"]["clip_ids"] == [r.id for r in held] and len(held) == third["data"]["eval_heldout_clips"]
    assert all(stage.get("skipped") for stages in third["train"].values() for stage in stages)
    assert third["evaluation"]["recipe"]["mouth_err_correct"] != report["evaluation"]["recipe"]["mouth_err_correct"]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process parents from Linux /proc")
@pytest.mark.slow
def test_killed_demo_leaves_no_training_process(tmp_path):
    from tests.helpers.processes import assert_all_end, kill_all, pool_workers

    random_demo_foundation(tmp_path / "foundation")
    data = [*SMALL_DATA, "data.synthetic.num_identities=4", "data.synthetic.heldout_identities=2"]
    train = ",".join(f'"{o}"' for o in [*data, "trainer.max_steps=100000"])  # trains until killed
    cmd = [sys.executable, "-m", "vexpress.cli.demo", f"output_dir={tmp_path / 'out'}",
           f"paths.cache_dir={tmp_path / 'cache'}", f"paths.root_dir={REPO_ROOT}", f"train_overrides=[{train}]",
           f"foundation={tmp_path / 'foundation'}", "threads=2", "workers=2"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 400
        logs = [tmp_path / "out" / "runs" / f"train_{run}.log" for run in ("recipe", "joint_only")]
        while time.monotonic() < deadline and proc.poll() is None:
            workers |= pool_workers(proc.pid)
            if len(workers) >= 2 and all(p.is_file() and "stage 1/" in p.read_text() for p in logs):
                break
            time.sleep(0.2)
        assert proc.poll() is None and len(workers) >= 2, "the demo ended before both lanes trained"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert_all_end(workers, 10, "training processes outlived the killed demo")
    finally:
        kill_all(workers)
        if proc.poll() is None:
            proc.kill()


def _demo_main(args, monkeypatch, capsys) -> tuple[int, str]:
    from vexpress.cli import demo

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["vexpress-demo", *args])
    code = 0
    try:
        demo.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("target", ["existing_file", "under_a_file", "proc"])
def test_unwritable_output_dir_is_a_one_line_error_before_any_work(target, tmp_path, monkeypatch, capsys):
    """An existing file, a path below a file, a folder where no file can be created (/proc: not writable even for
    root): ``error: ...`` naming output_dir, exit 2, and nothing computed (the cache folder stays empty)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = {"existing_file": afile, "under_a_file": afile / "demo", "proc": Path("/proc/self")}[target]
    cache = tmp_path / "cache"
    code, err = _demo_main([f"output_dir={out}", f"paths.cache_dir={cache}", f"paths.root_dir={REPO_ROOT}"],
                           monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "output_dir" in lines[0] and str(out) in lines[0]
    assert not cache.exists() or not any(cache.iterdir())
    assert afile.read_text() == "x"


def test_protocol_counts_come_from_the_scored_data():
    from vexpress.demo.report import _protocol_sentence, scored_protocol

    evals = {"recipe": {"clips": 2, "frames": 4, "per_clip": {"c1": {}, "c0": {}}},
             "joint_only": {"clips": 2, "frames": 4, "per_clip": {"c0": {}, "c1": {}}}}
    p = scored_protocol({"clips": 50, "frames": 16, "sampler": "ddim"}, evals)
    assert (p["clips"], p["frames"], p["clips_requested"], p["frames_requested"]) == (2, 4, 50, 16)
    assert p["clip_ids"] == ["c0", "c1"] and p["sampler"] == "ddim"
    assert _protocol_sentence({"protocol": p}).startswith("2 held-out clips x 4 frames")
    assert "requested" not in _protocol_sentence({"protocol": scored_protocol({"clips": 2, "frames": 4}, evals)})


def test_goals_and_paired_tables_follow_the_run_roles():
    """The recipe is the run with role recipe, whatever its name; stage labels and runs without a role are not
    compared."""
    from vexpress.demo.report import goals, paired_table

    def row(mouth: float) -> dict:
        return {"mouth_err_correct": mouth, "mouth_err_shuffled": 2 * mouth, "ratio": 2.0, "identity_err": 0.1,
                "pose_err": 1.0, "per_clip": {"c0": {"mouth_err_correct": mouth}, "c1": {"mouth_err_correct": mouth}}}

    evals = {"ours": row(0.1), "ours/0_image": row(0.5), "baseline": row(0.2)}
    roles = {"ours": "recipe", "baseline": "ablation"}
    floor = {"mouth_err": 0.06, "identity_err": 0.08}
    g = goals(evals, roles, floor)  # the recipe's own figures against the VAE floor
    assert g["all_met"] and g["mouth_err_correct"]["limit"] == pytest.approx(0.12)
    assert g["identity_err"]["limit"] == pytest.approx(0.104) and g["ratio"]["met"] and g["pose_err"]["met"]
    g = goals({**evals, "ours": {**row(0.1), "ratio": 1.9, "pose_err": 1.6}}, roles, floor)
    assert not g["ratio"]["met"] and not g["pose_err"]["met"] and g["mouth_err_correct"]["met"] and not g["all_met"]
    assert not goals(evals, roles, {})["identity_err"]["met"]  # no floor: a relative goal cannot be met
    # the standard error over the recipe's clips, where it has per-clip values (two clips 0.1 and 0.3: 0.1)
    spread = {**row(0.2), "per_clip": {"c0": {"mouth_err_correct": 0.1}, "c1": {"mouth_err_correct": 0.3}}}
    g = goals({**evals, "ours": spread}, roles, floor)
    assert g["mouth_err_correct"]["se"] == pytest.approx(0.1) and g["identity_err"]["se"] is None
    paired = paired_table(evals, roles)
    assert list(paired) == ["baseline"] and paired["baseline"]["mouth_err_correct"]["mean"] == pytest.approx(-0.1)
    assert goals(evals, {"baseline": "ablation"}, floor) == {}


@pytest.mark.parametrize("runs,match", [
    ({"a": {"experiment": "demo_recipe", "role": "ablation"}}, "found 0 .none."),
    ({"a": {"experiment": "x", "role": "recipe"}, "b": {"experiment": "y", "role": "recipe"}}, "found 2 .a, b."),
    ({"a": {"experiment": "x", "role": "baseline"}}, "runs.a must be"),
    ({"a": "demo_recipe"}, "runs.a must be"),
    ({"a": {"experiment": "x", "role": "recipe", "overrides": "seed=1"}}, "runs.a.overrides must be a list"),
])
def test_run_roles_need_exactly_one_recipe(runs, match):
    from vexpress.demo.run import run_roles
    from vexpress.errors import InputError

    with pytest.raises(InputError, match=match) as exc:
        run_roles(runs)
    assert "\n" not in str(exc.value)
    assert run_roles({"r": {"experiment": "x", "role": "recipe"}, "s": {"experiment": "y", "role": "ablation"}}) == {
        "r": "recipe", "s": "ablation"}


def test_shipped_demo_config_declares_one_recipe():
    from omegaconf import OmegaConf

    from vexpress.demo.run import run_roles
    from vexpress.utils.paths import CONF_DIR

    roles = run_roles(OmegaConf.load(CONF_DIR / "demo.yaml").runs)
    assert roles == {"recipe": "recipe", "progressive_no_dropout": "ablation", "joint_only": "ablation"}


def test_training_lanes_keep_runs_that_share_their_first_stage_together(tmp_path):
    from hydra import compose, initialize_config_dir

    from vexpress.demo.run import train_overrides, training_lanes
    from vexpress.utils.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="demo", overrides=[f"paths.root_dir={REPO_ROOT}", f"output_dir={tmp_path}"])
        overrides = {run: train_overrides(cfg, run) for run in cfg.runs}
        # the recipe and the progressive ablation start with the same image stage: one lane, recipe first
        assert training_lanes(overrides) == [["recipe", "progressive_no_dropout"], ["joint_only"]]
        # a changed first stage makes its own lane
        overrides["progressive_no_dropout"] = [*overrides["progressive_no_dropout"],
                                               "curriculum.stage_overrides.image.lr=1e-3"]
        assert training_lanes(overrides) == [["recipe"], ["progressive_no_dropout"], ["joint_only"]]


def test_a_run_adds_its_own_training_overrides_after_the_demos(tmp_path):
    """``runs.<name>.overrides`` reach that run's vexpress-train command only, after ``train_overrides``; a change
    of a later stage keeps the run in the lane of the runs it shares its first stage with."""
    from hydra import compose, initialize_config_dir

    from vexpress.demo.run import train_overrides, training_lanes
    from vexpress.utils.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="demo", overrides=[
            f"paths.root_dir={REPO_ROOT}", f"output_dir={tmp_path}", 'train_overrides=["seed=3"]',
            '+runs.progressive_no_dropout.overrides=["curriculum.stage_overrides.joint.max_steps=5"]'])
        theirs, ours = train_overrides(cfg, "recipe"), train_overrides(cfg, "progressive_no_dropout")
        assert "curriculum.stage_overrides.joint.max_steps=5" not in theirs
        assert ours[-2:] == ["seed=3", "curriculum.stage_overrides.joint.max_steps=5"]
        assert training_lanes({run: train_overrides(cfg, run) for run in cfg.runs}) == [
            ["recipe", "progressive_no_dropout"], ["joint_only"]]


def test_a_run_is_evaluated_with_its_own_sampler_settings(tmp_path):
    """``runs.<name>.eval`` replaces the demo's ``eval`` settings for that run's evaluation jobs only; settings that
    fix what is scored (clips, frames, the shuffled pairing) stay common and are refused per run."""
    from hydra import compose, initialize_config_dir

    from vexpress.demo.run import demo_jobs, run_eval
    from vexpress.errors import InputError
    from vexpress.utils.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="demo", overrides=[
            f"paths.root_dir={REPO_ROOT}", f"output_dir={tmp_path}", "eval.audio_attention_weight=2.0",
            "+runs.joint_only.eval={audio_attention_weight:1.25,num_inference_steps:4}"])
        tcfg = compose(config_name="train", overrides=["experiment=demo_recipe", f"paths.root_dir={REPO_ROOT}"])
        jobs = {j.name: j for j in demo_jobs(cfg, tcfg, tmp_path / "latents", [], {}, None, here=True)}
        done = {f"train/{run}": ([{"export": f"/x/{run}/{i}"} for i in range(3)], 0.0, None) for run in cfg.runs}
        weights = {}
        for run in cfg.runs:
            export, label, _, _, ecfg, _, _, _ = jobs[f"evaluate/{run}"].arguments(done)
            weights[run] = (float(ecfg.audio_attention_weight), int(ecfg.num_inference_steps))
            assert label == run and str(export).startswith(f"/x/{run}/")
            assert ecfg.clips == cfg.eval.clips and ecfg.first_clip == cfg.eval.first_clip
        steps = int(cfg.eval.num_inference_steps)
        assert weights == {"recipe": (2.0, steps), "progressive_no_dropout": (2.0, steps), "joint_only": (1.25, 4)}
        for bad in ("clips:8", "frames:4", "shuffle_seed:1", "no_such_setting:1"):
            cfg2 = compose(config_name="demo", overrides=[f"paths.root_dir={REPO_ROOT}", f"output_dir={tmp_path}",
                                                          f"+runs.joint_only.eval={{{bad}}}"])
            with pytest.raises(InputError, match="runs.joint_only.eval"):
                run_eval(cfg2, "joint_only")
    # the report says which runs were sampled with their own settings
    from vexpress.demo.report import _protocol_sentence

    text = _protocol_sentence({"protocol": {"clips": 24, "frames": 16, "clips_requested": 24},
                               "run_eval": {"recipe": {}, "joint_only": {"audio_attention_weight": 1.5}}})
    assert text.endswith("sampled with their own settings: joint_only (audio_attention_weight=1.5)")
