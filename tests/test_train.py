"""The training app: a short curriculum end to end, bit-exact resume after a kill, and 2-process DDP on CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training import cli_helpers as ch
from vexpress.utils.io import load_tensors
from vexpress.utils.paths import REPO_ROOT

STAGE = ["experiment=smoke", "curriculum=single", "stage=joint", "stage.num_frames=2", "stage.batch_size=2",
         "stage.lr=1e-3", "trainer.max_steps=4", "dropout=ramp", "callbacks.model_checkpoint.every_n_train_steps=2",
         "callbacks.influence_probe.every_n_steps=2", "trainer.log_every_n_steps=1"]


def _export_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for name in ("denoising_unet", "reference_net", "v_kps_guider", "audio_projection"):
        out.update({f"{name}.{k}": v for k, v in load_tensors(folder / f"{name}.safetensors").items()})
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["+stage.lr_scale={audio_projection:3,motion_modules:0.5}"],
                                   ["+stage.lr_schedule={name:cosine,final_factor:0.05}"]],
                         ids=["one_rate", "lr_scale", "lr_schedule"])
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, cache, extra):
    """Stop after step 2 (a checkpoint is written there), resume from last.ckpt: the weights after step 4 are
    bit-identical to a run that was never interrupted (data order, dropout masks, noise, optimizer state; with
    ``lr_scale``, an optimizer of several parameter groups; with ``lr_schedule``, the stage's own decaying rate)."""
    stage = [*STAGE, *extra]
    full, killed_dir, first = ch.full_and_stopped_runs(tmp_path, stage, cache)
    assert full[0]["global_step"] == 4
    assert first[0]["global_step"] == 2 and first[0]["export"] is None
    ckpt = killed_dir / "stages" / "0_joint" / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    torch.load(ckpt, map_location="cpu", weights_only=True)  # the checkpoint is weights-only loadable
    resumed = ch.run(ch.overrides(killed_dir, stage, cache))
    assert resumed[0]["global_step"] == 4
    a, b = _export_tensors(Path(full[0]["export"])), _export_tensors(Path(resumed[0]["export"]))
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    print(f"resume equality: {len(a) - len(diff)}/{len(a)} tensors bit-identical")
    assert not diff, f"{len(diff)} tensors differ after resume, e.g. {diff[0]}"
    # a finished stage is skipped on a re-run
    again = ch.run(ch.overrides(killed_dir, stage, cache))
    assert again[0].get("skipped")


@pytest.mark.slow
def test_three_stage_curriculum_chains_exports(tmp_path, cache):
    res = ch.run(ch.overrides(tmp_path, ["experiment=smoke", "callbacks.influence_probe.every_n_steps=1"], cache))
    assert [r["stage"] for r in res] == ["image", "audio_motion", "joint"]
    assert all(Path(r["export"], "DONE").is_file() for r in res)
    audio = [r["probe"][-1][1]["audio"] for r in res]
    assert audio[0] == 0.0  # stage 1: the audio path is exactly silent
    assert (tmp_path / "csv").is_dir()


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, cache):
    """trainer=ddp_cpu: 2 processes (gloo) train a few steps through the real console entry point."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vexpress.cli.train", *ch.overrides(tmp_path, STAGE, cache), "trainer=ddp_cpu",
           "trainer.max_steps=3", "callbacks.model_checkpoint.every_n_train_steps=3", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = tmp_path / "stages" / "0_joint" / "export"
    assert (export / "DONE").is_file()
    assert "WORLD_SIZE" not in os.environ  # the test process itself stayed single-process


def test_bad_stage_name_is_a_one_line_user_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-m", "vexpress.cli.train", *ch.overrides(tmp_path, ["curriculum=vexpress",
           "+curriculum.stage_overrides.imgae.max_steps=3"]), f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: curriculum names unknown stages ['imgae']")


@pytest.mark.slow
def test_wandb_offline_run_per_stage(tmp_path, cache):
    """The default logger: W&B offline, one run per stage, grouped by experiment and tagged with the stage."""
    pytest.importorskip("wandb")
    ov = ch.overrides(tmp_path, [*STAGE, "logger=wandb", "trainer.max_steps=2", "experiment_name=wb_test"], cache)
    res = ch.run(ov)
    assert res[0]["global_step"] == 2
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "wandb").iterdir()) if (tmp_path / "wandb").exists() else "no wandb dir"
    meta = next(runs[0].rglob("wandb-metadata.json"), None)
    files = [p.name for p in runs[0].rglob("*")]
    assert any(name.endswith(".wandb") for name in files)
    assert meta is None or meta.stat().st_size > 0


@pytest.mark.slow
def test_sample_video_and_ema_callbacks(tmp_path, cache):
    """Sample videos with audio through the inference pipeline, and EMA weights in the export."""
    samples = tmp_path / "samples"
    extra = ["+callbacks.video_logger._target_=vexpress.callbacks.video_logger.VideoSampleLogger",
             "+callbacks.video_logger.every_n_steps=2", "+callbacks.video_logger.num_inference_steps=2",
             "+callbacks.video_logger.max_frames=4", f"+callbacks.video_logger.directory={samples}",
             "+callbacks.ema._target_=vexpress.callbacks.ema.EMA", "+callbacks.ema.decay=0.5",
             "trainer.max_steps=2"]
    res = ch.run(ch.overrides(tmp_path, [*STAGE, *extra], cache))
    assert res[0]["global_step"] == 2
    videos = sorted(samples.glob("*.mp4"))
    assert videos and videos[-1].stat().st_size > 0
    import av

    with av.open(str(videos[-1])) as container:
        assert container.streams.video and container.streams.audio  # the clip's audio is muxed in
    model = res[0]["model"]
    ema = next(cb for cb in res[0]["trainer"].callbacks if type(cb).__name__ == "EMA")
    exported = _export_tensors(Path(res[0]["export"]))
    name, shadow = next((n, s) for n, s in ema.weights.shadow.items() if n.startswith("denoising_unet."))
    assert torch.equal(exported[name], shadow.to(exported[name].dtype))  # the export holds the EMA weights
    assert not torch.equal(dict(model.net.named_parameters())[name].detach(), shadow)


@pytest.mark.slow
def test_bf16_autocast_with_fp32_master_weights(tmp_path, cache):
    """trainer.precision=bf16-mixed (the GPU default) runs on CPU too; the weights stay float32."""
    res = ch.run(ch.overrides(tmp_path, [*STAGE, "trainer.precision=bf16-mixed", "trainer.max_steps=2"], cache))
    assert res[0]["global_step"] == 2
    assert all(p.dtype == torch.float32 for p in res[0]["model"].net.parameters())
    assert torch.isfinite(torch.tensor(res[0]["metrics"]["train/loss"]))


@pytest.mark.slow
def test_multirun_sweep_over_dropout_presets(tmp_path, cache):
    """``vexpress-train -m dropout=cfg_only,paper``: one job per preset, each in its own folder with its own export."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "1"}
    ov = [o for o in ch.overrides(tmp_path, STAGE, cache) if not o.startswith(("paths.output_dir=", "dropout="))]
    cmd = [sys.executable, "-m", "vexpress.cli.train", "-m", *ov, "dropout=cfg_only,paper", "trainer.max_steps=2",
           "callbacks.model_checkpoint.every_n_train_steps=2", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("0", "1"):
        assert (tmp_path / "sweep" / job / "stages" / "0_joint" / "export" / "DONE").is_file(), job
    # each job logged the dropout rates it applied: the 'paper' job drops the strong conditions, 'cfg_only' does not
    rates = {}
    for job in ("0", "1"):
        import csv

        rows = list(csv.DictReader(open(next((tmp_path / "sweep" / job / "csv").rglob("metrics.csv")))))
        rates[job] = max(float(r.get("dropout/p_reference") or 0) for r in rows)
    assert rates["0"] == 0.0 and rates["1"] > 0.0, rates


# ---- reliability: truncated checkpoints, finished reruns, data/model mismatch -------------------------------------
@pytest.mark.slow
def test_truncated_latest_checkpoint_resumes_from_the_previous(tmp_path, cache, caplog):
    """Two step checkpoints are kept; a truncated newest one (through last.ckpt) is skipped with one warning line
    naming it, and the stage resumes from the previous one and finishes."""
    import logging

    every = [*STAGE, "callbacks.model_checkpoint.every_n_train_steps=1"]
    stop = ["+callbacks.stop._target_=tests.training.cli_helpers.StopAt", "+callbacks.stop.step=3"]
    first = ch.run(ch.overrides(tmp_path, every + stop, cache))
    assert first[0]["global_step"] == 3
    folder = tmp_path / "stages" / "0_joint" / "checkpoints"
    steps = sorted(p.name for p in folder.glob("step_*.ckpt"))
    assert steps == ["step_0000002.ckpt", "step_0000003.ckpt"], steps  # the previous one is kept
    assert not list(folder.glob(".*partial"))  # every write completed and was renamed
    last = folder / "last.ckpt"
    size = os.path.getsize(last)
    with open(last, "r+b") as fh:  # a disk that filled up while the newest checkpoint was written
        fh.truncate(size // 3)
    with caplog.at_level(logging.WARNING, logger="vexpress.train"):
        resumed = ch.run(ch.overrides(tmp_path, every, cache))
    assert resumed[0]["global_step"] == 4 and Path(resumed[0]["export"], "DONE").is_file()
    warnings = [r.getMessage() for r in caplog.records if r.name == "vexpress.train" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "last.ckpt" in warnings[0] and "step_0000002.ckpt" in warnings[0], warnings


@pytest.mark.slow
def test_rerun_of_a_finished_run_keeps_its_summary(tmp_path, cache, monkeypatch, capsys):
    """``vexpress-train`` twice on the same folder: the second run trains nothing, exits 0 and leaves
    train_summary.json exactly as the first run wrote it."""
    from vexpress.cli import train

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    argv = ["vexpress-train", *ch.overrides(tmp_path, [*STAGE, "trainer.max_steps=2", "logger=csv"], cache),
            f"hydra.run.dir={tmp_path}"]
    monkeypatch.setattr(sys, "argv", argv)
    train.main()
    summary = tmp_path / "train_summary.json"
    before = summary.read_bytes()
    assert b'"global_step": 2' in before
    capsys.readouterr()
    train.main()  # returns normally: exit code 0
    assert summary.read_bytes() == before
    assert "run already finished" in capsys.readouterr().out


def test_summary_of_a_partly_finished_rerun_keeps_the_finished_stages_records():
    from vexpress.training.runner import merge_summary

    previous = [{"stage": "image", "index": 0, "global_step": 5, "stage_key": "a", "export": "e0"}]
    results = [{"stage": "image", "index": 0, "skipped": True, "stage_key": "a", "export": "e0"},
               {"stage": "joint", "index": 1, "global_step": 3, "stage_key": "b", "export": "e1", "trainer": object()}]
    merged = merge_summary(previous, results)
    assert merged[0] == previous[0]
    assert merged[1] == {"stage": "joint", "index": 1, "global_step": 3, "stage_key": "b", "export": "e1"}
    # a skipped stage trained under another key (a different config) keeps no stale record
    assert merge_summary(previous, [{**results[0], "stage_key": "c"}])[0]["skipped"]


def test_data_that_does_not_fit_the_model_fails_before_any_work(tmp_path):
    """data=prepared (512 px, latents 1/8) with the tiny model (latents 1/4): one line naming the setting."""
    from vexpress.errors import InputError

    ov = ch.overrides(tmp_path, ["data=prepared", f"data.root={tmp_path / 'no_data'}", "model=tiny", "logger=csv",
                                 "trainer=cpu"], small_data=False)
    with pytest.raises(InputError) as exc:
        ch.run(ov)
    msg = str(exc.value)
    assert "\n" not in msg and "data.latent_downscale=8" in msg and "set data.latent_downscale=4" in msg
    assert not (tmp_path / "stages").exists() and not (tmp_path / "csv").exists()
    # a frame size that is not a multiple of the latent downscale is refused too
    with pytest.raises(InputError, match=r"data.image_size=66 .* multiple of 4"):
        ch.run(ch.overrides(tmp_path, ["logger=csv", "data.image_size=66"]))


def test_stage_key_follows_the_exported_average():
    """A stage that exports an EMA of its weights is another result: reruns must not reuse one for the other."""
    from omegaconf import OmegaConf

    from vexpress.training.runner import stage_key

    base = OmegaConf.create({"stage": {"name": "image", "lr": 1e-3}, "seed": 7,
                             "callbacks": {"stage_export": {"use_ema": True}}})
    with_ema = OmegaConf.merge(base, {"callbacks": {"ema": {"decay": 0.99, "warmup": True, "every_n_steps": 1}}})
    other_decay = OmegaConf.merge(with_ema, {"callbacks": {"ema": {"decay": 0.999}}})
    not_exported = OmegaConf.merge(with_ema, {"callbacks": {"stage_export": {"use_ema": False}}})
    keys = {stage_key(c) for c in (base, with_ema, other_decay)}
    assert len(keys) == 3
    assert stage_key(not_exported) == stage_key(base)


def test_stage_key_follows_the_data_not_where_its_class_lives():
    """Moving the DataModule class (its ``_target_``) keeps trained stages; changing what it feeds does not."""
    from omegaconf import OmegaConf

    from vexpress.training.runner import stage_key

    base = OmegaConf.create({"stage": {"name": "image"}, "seed": 7,
                             "data": {"_target_": "vexpress.training.datamodule.TalkingFaceDataModule",
                                      "image_size": 64, "num_workers": 0}})
    moved = OmegaConf.merge(base, {"data": {"_target_": "somewhere.else.TalkingFaceDataModule", "num_workers": 4}})
    other_size = OmegaConf.merge(base, {"data": {"image_size": 32}})
    assert stage_key(moved) == stage_key(base) != stage_key(other_size)
