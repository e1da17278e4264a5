"""The consistency-distillation stage: solver and parameterisation maths, the module's loss and target network,
exact checkpoint round trip, the stage config training a few steps, kill + resume, and the strict export."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from tests.training import cli_helpers as ch
from tests.training import random_batches as fakes
from tests.training.helpers import scheduler, tiny_network
from vexpress.training.distill import (
    ConsistencyDistillModule,
    alpha_bar,
    boundary_scalings,
    consistency_output,
    ddim_step,
    solver_grid,
    x0_from_v,
)
from vexpress.training.optim import adamw
from vexpress.training.stages import StageSpec, apply_stage
from vexpress.utils.io import load_tensors

DISTILL_GROUPS = ["denoiser_base", "reference_attention", "audio_attention", "motion_modules"]


def _module(seed: int = 0, **kw) -> ConsistencyDistillModule:
    m = ConsistencyDistillModule(net=tiny_network(seed), noise_scheduler=scheduler(),
                                 optimizer=functools.partial(adamw, lr=1e-3), seed=seed, noise_offset=0.0, **kw)
    apply_stage(m.net, StageSpec(name="distill", trainable=DISTILL_GROUPS, zero_init_at_start=False))
    return m


def _batch(frames: int = 2, n: int = 2) -> dict:
    ds = fakes.RandomClips(n=n, num_frames=frames)
    items = [ds[i] for i in range(n)]
    return {k: (torch.stack([it[k] for it in items]) if isinstance(items[0][k], torch.Tensor)
                else [it[k] for it in items]) for k in items[0]}


# --- maths ------------------------------------------------------------------------------------------------------
def test_solver_grid_is_the_trailing_ddim_grid():
    grid = solver_grid(1000, 20)
    assert len(grid) == 50 and grid[0] == 19 and grid[-1] == 999 and torch.all(grid.diff() == 20)
    with pytest.raises(Exception, match="solver_skip"):
        solver_grid(1000, 30)


def test_boundary_condition_and_zero_snr_end():
    c_skip, c_out = boundary_scalings(torch.tensor([-1, 0, 19, 999]))
    assert c_skip[0] == 1 and c_out[0] == 0 and c_skip[1] == 1 and c_out[1] == 0  # f(x, end) = x
    assert c_skip[3] < 1e-8 and abs(c_out[3] - 1) < 1e-8  # at t = 999 f is the clean estimate
    ac = scheduler().alphas_cumprod
    assert float(ac[999]) == 0.0  # zero terminal SNR: x0 = -v there, no division anywhere
    x, v = torch.randn(2, 4, 1, 2, 2), torch.randn(2, 4, 1, 2, 2)
    t = torch.tensor([999, 999])
    assert torch.allclose(x0_from_v(x, v, alpha_bar(ac, t)), -v)
    # the clean end (s = -1) returns the sample itself, whatever v is
    assert torch.equal(consistency_output(x, v, torch.tensor([-1, -1]), ac), x)


def test_ddim_step_with_the_exact_velocity_lands_on_the_forward_process():
    ac = scheduler().alphas_cumprod
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 2, 4, 4, generator=g), torch.randn(3, 4, 2, 4, 4, generator=g)
    t, s = torch.tensor([999, 519, 19]), torch.tensor([979, 499, -1])
    a_t, a_s = alpha_bar(ac, t), alpha_bar(ac, s)

    def col(c):
        return c.view(-1, 1, 1, 1, 1)

    x0d, epsd = x0.double(), eps.double()
    x_t = col(a_t.sqrt()) * x0d + col((1 - a_t).sqrt()) * epsd
    v = col(a_t.sqrt()) * epsd - col((1 - a_t).sqrt()) * x0d
    x_s = ddim_step(x_t, v, a_t, a_s)
    expect = col(a_s.sqrt()) * x0d + col((1 - a_s).sqrt()) * epsd
    assert torch.allclose(x_s, expect, atol=1e-10)
    assert torch.allclose(x_s[2].float(), x0[2], atol=1e-6)  # the last step reaches x0


# --- the module -------------------------------------------------------------------------------------------------
def test_step_trains_the_student_only_and_the_target_follows_by_ema():
    m = _module(ema_decay=0.5)
    teacher0 = {n: p.detach().clone() for n, p in m.teacher.named_parameters()}
    target0 = {n: p.detach().clone() for n, p in m.target_net.named_parameters()}
    out = m.distill_step(_batch(), torch.Generator().manual_seed(1))
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
    trained = {n for n, p in m.net.named_parameters() if p.grad is not None}
    assert trained and all(n.startswith("denoising_unet.") for n in trained)
    assert not any(p.requires_grad for p in m.teacher.parameters())
    assert not any(p.grad is not None for p in m.teacher.parameters())
    # frozen condition encoders are shared with the student, not copied
    assert m.teacher.reference_net is m.net.reference_net and m.target_net.v_kps_guider is m.net.v_kps_guider
    assert m.target_net.denoising_unet is not m.net.denoising_unet
    with torch.no_grad():
        for p in m.net.parameters():
            if p.requires_grad:
                p.add_(0.1)
    m.update_target()
    student = dict(m.net.named_parameters())
    for n, p in m.target_net.named_parameters():
        if student[n].requires_grad:
            assert torch.allclose(p, 0.5 * target0[n] + 0.5 * student[n])
        else:
            assert torch.equal(p, target0[n])
    assert all(torch.equal(p, teacher0[n]) for n, p in m.teacher.named_parameters())


@pytest.mark.slow
def test_guidance_is_folded_into_the_teacher_target():
    """With w = 1 the teacher runs once; with w > 1 the target changes (the unconditional branch enters)."""
    a = _module(guidance_scale=1.0).distill_step(_batch(), torch.Generator().manual_seed(3))
    b = _module(guidance_scale=3.5).distill_step(_batch(), torch.Generator().manual_seed(3))
    assert not torch.isclose(a["loss"], b["loss"])


def test_checkpoint_round_trip_restores_the_target_exactly():
    m = _module()
    with torch.no_grad():
        for n, p in m.target_net.named_parameters():
            if n.startswith("denoising_unet."):
                p.add_(torch.randn_like(p))
    m.ema_updates, m.train_draws = 7, 11
    ckpt = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(ckpt)
    assert not any(k.startswith(("teacher", "target")) for k in ckpt["state_dict"])
    fresh = _module()
    fresh.on_load_checkpoint(ckpt)
    saved = dict(m.target_net.named_parameters())
    assert all(torch.equal(p, saved[n]) for n, p in fresh.target_net.named_parameters())
    assert fresh.ema_updates == 7 and fresh.train_draws == 11


# --- the stage config end to end ----------------------------------------------------------------------------------
STAGE = ["experiment=smoke", "curriculum=single", "stage=distill", "stage.num_frames=2", "stage.batch_size=2",
         "stage.lr=1e-3", "stage.gradient_checkpointing=false", "trainer.max_steps=4",
         "callbacks.model_checkpoint.every_n_train_steps=2", "callbacks.influence_probe.every_n_steps=2",
         "trainer.log_every_n_steps=1"]

FILES = ("denoising_unet", "motion_module", "reference_net", "v_kps_guider", "audio_projection")


def _export_tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for name in FILES:
        out.update({f"{name}.{k}": v for k, v in load_tensors(folder / f"{name}.safetensors").items()})
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _teacher_export(tmp_path: Path, cache: Path) -> Path:
    """A teacher export of the run's own tiny model (random weights, saved in the official layout)."""
    from hydra import initialize_config_dir
    from hydra.utils import instantiate

    from vexpress.models.weights import save_export
    from vexpress.utils.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = ch.compose(ch.overrides(tmp_path / "compose", STAGE, cache))
    torch.manual_seed(123)
    net = instantiate(cfg.model.net)
    return save_export(tmp_path / "teacher", net)


@pytest.mark.slow
def test_stage_config_trains_and_exports_a_strictly_loadable_student(tmp_path, cache):
    from vexpress.models.vexpress_net import VExpressNet
    from vexpress.models.weights import load_export, load_official

    teacher_dir = _teacher_export(tmp_path, cache)
    result = ch.run(ch.overrides(tmp_path / "run", STAGE + [f"stage.init_from={teacher_dir}"], cache))
    r = result[0]
    assert r["stage"] == "distill" and r["global_step"] == 4 and r["export"]
    model = r["model"]
    assert isinstance(model, ConsistencyDistillModule)
    assert torch.isfinite(torch.tensor(r["metrics"]["train/loss"]))
    # the teacher is the init export, untouched; the student moved away from it in the trained groups only
    teacher = _export_tensors(Path(teacher_dir))
    student = _export_tensors(Path(r["export"]))
    assert teacher.keys() == student.keys()
    changed = {k for k in teacher if not torch.equal(teacher[k], student[k])}
    assert changed and all(k.startswith(("denoising_unet.", "motion_module.")) for k in changed)
    assert not any(k.startswith(("reference_net.", "v_kps_guider.", "audio_projection.")) for k in changed)
    tw = {n: p for n, p in model.teacher.named_parameters() if n.startswith("denoising_unet.conv_in")}
    assert all(torch.equal(p.cpu(), teacher[n]) for n, p in tw.items())
    # the export round-trips through the strict loaders (export folder and the five official files)
    export = load_export(r["export"])
    again = VExpressNet(export.net.config)
    load_official(again, r["export"])
    sd_a, sd_b = export.net.state_dict(), again.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


@pytest.mark.slow
def test_killed_and_resumed_distillation_equals_uninterrupted(tmp_path, cache):
    """Stop after step 2, resume from last.ckpt: the student after step 4 is bit-identical to an uninterrupted run
    (EMA target, random stream, data order and optimizer state all restored)."""
    full, killed, first = ch.full_and_stopped_runs(tmp_path, STAGE, cache)
    assert full[0]["global_step"] == 4
    assert first[0]["global_step"] == 2 and first[0]["export"] is None
    ckpt = killed / "stages" / "0_distill" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["vexpress_distill"]["ema_updates"] == 2 and state["vexpress_distill"]["target"]
    resumed = ch.run(ch.overrides(killed, STAGE, cache))
    assert resumed[0]["global_step"] == 4
    a, b = _export_tensors(Path(full[0]["export"])), _export_tensors(Path(resumed[0]["export"]))
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{len(diff)} tensors differ after resume, e.g. {diff[0]}"
    ta = dict(full[0]["model"].target_net.named_parameters())
    tb = dict(resumed[0]["model"].target_net.named_parameters())
    assert all(torch.equal(ta[n], tb[n]) for n in ta)
