"""Stage invariants (house style §4.4): after a stage's steps every parameter outside its trainable set is
bit-identical, every trainable one changed, and the zero-initialised outputs start at exactly zero. The three
stages run as a chain, each initialised from the previous stage's export."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import OmegaConf

from tests.training import random_batches as fakes
from tests.training.helpers import lit_module, tiny_network
from vexpress.callbacks.condition_dropout import ConditionDropout
from vexpress.callbacks.export import StageExport
from vexpress.callbacks.stage_scheduler import StageScheduler
from vexpress.errors import InputError
from vexpress.models.conditioning import DropMask
from vexpress.models.vexpress_net import PARAMETER_GROUPS
from vexpress.training.stages import (
    KNOWN_GROUPS,
    StageError,
    StageSpec,
    apply_stage,
    check_trainable,
    resolve_patterns,
    trainable_parameter_names,
)
from vexpress.utils.paths import CONF_DIR


def stage_from_conf(name: str, **over) -> StageSpec:
    d = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "stage" / f"{name}.yaml"))
    d.pop("_target_")
    d.update(over)
    return StageSpec(**d)


def test_groups_match_the_network():
    assert tuple(KNOWN_GROUPS) == tuple(PARAMETER_GROUPS)


def test_spec_validation():
    with pytest.raises(InputError):
        StageSpec(name="x", trainable=["unet"])
    with pytest.raises(InputError):
        StageSpec(name="x", trainable=[])
    with pytest.raises(InputError):
        StageSpec(name="x", trainable=["motion_modules"], num_frames=0)
    with pytest.raises(InputError):
        resolve_patterns(["a.b"], ["nothing.*"])


def test_official_stage_configs_and_zero_init():
    image, audio, joint = (stage_from_conf(n) for n in ("image", "audio_motion", "joint"))
    assert (image.num_frames, audio.num_frames, joint.num_frames) == (1, 20, 8)
    assert audio.gradient_checkpointing and not image.gradient_checkpointing
    assert not joint.zero_init_at_start and joint.zero_init == audio.zero_init  # the §9.1 re-zeroing is a flag
    assert "reference_net_frozen" not in joint.trainable
    net = tiny_network()
    with torch.no_grad():  # pretend the projections were trained
        for n, p in net.named_parameters():
            if "proj_out" in n or "attn2.to_out" in n:
                p.add_(0.1)
    report = apply_stage(net, image)
    params = dict(net.named_parameters())
    assert report.zeroed and all(torch.count_nonzero(params[n]) == 0 for n in report.zeroed)
    assert not any(n.startswith("reference_net") for n in report.zeroed)  # only the denoiser's projections
    check_trainable(net, image)
    # the audio path contributes exactly nothing, the motion modules are the identity
    x = fakes.batch(num_frames=2)
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(2, 4, 2, 8, 8, generator=g)
    kw = dict(ref_latents=x["reference_latents"], kps_images=x["kps_images"], audio_windows=x["audio_windows"])
    t = torch.tensor([10, 700])
    with torch.no_grad():
        full = net(noisy, t, drop=DropMask.none(2), **kw)
        no_audio = net(noisy, t, drop=DropMask(torch.zeros(2), torch.zeros(2), torch.ones(2)), **kw)
        per_frame = torch.cat([net(noisy[:, :, i:i + 1], t, drop=DropMask.none(2), ref_latents=kw["ref_latents"],
                                   kps_images=kw["kps_images"][:, :, i:i + 1],
                                   audio_windows=kw["audio_windows"][:, i:i + 1]) for i in range(2)], 2)
    assert torch.equal(full, no_audio)
    assert torch.allclose(full, per_frame, atol=1e-5)
    # joint with the official flag re-zeroes, without it keeps the trained projections
    kept = apply_stage(net, joint)
    assert kept.zeroed == []
    with pytest.raises(StageError):
        check_trainable(net, image)


def _snapshot(net):
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def _params_without_gradient(spec: StageSpec, init_from=None) -> set[str]:
    """Trainable parameters that receive no gradient at all in this stage (structurally unused)."""
    m = lit_module()
    apply_stage(m.net, spec if init_from is None else StageSpec(**{**spec.__dict__, "init_from": init_from}))
    b = fakes.batch(num_frames=spec.num_frames)
    out = m.diffusion_step(b, torch.Generator().manual_seed(0))
    out.loss.backward()
    names = set(trainable_parameter_names(m.net, spec))
    return {n for n, p in m.net.named_parameters() if n in names and p.grad is None}


@pytest.mark.slow
def test_stage_chain_invariants(tmp_path):
    specs = [stage_from_conf("image", num_frames=1, batch_size=2, max_steps=3, lr=1e-3),
             stage_from_conf("audio_motion", num_frames=2, batch_size=2, max_steps=3, lr=1e-3,
                             gradient_checkpointing=True),
             stage_from_conf("joint", num_frames=2, batch_size=2, max_steps=3, lr=1e-3)]
    previous = None
    for i, spec in enumerate(specs):
        if previous is not None:
            spec.init_from = str(previous)
        model = lit_module(seed=i + 10)  # a different random init: everything must come from the export
        export_dir = tmp_path / f"{i}_{spec.name}"
        sched = StageScheduler(spec, i, [s.name for s in specs])
        trainer = pl.Trainer(callbacks=[sched, ConditionDropout({"uncond": 0.0}), StageExport(str(export_dir))],
                             max_steps=spec.max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0)

        class Snap(pl.Callback):
            def on_fit_start(self, trainer, pl_module):
                self.before = _snapshot(pl_module.net)

        snap = Snap()
        trainer.callbacks.append(snap)
        trainer.fit(model, datamodule=fakes.RandomClipsDataModule(num_frames=spec.num_frames, batch_size=2))
        assert trainer.global_step == spec.max_steps
        if previous is not None:  # initialised from the previous export (not from this model's random init)
            from vexpress.models.weights import load_export

            prev_net = load_export(previous, load_vae=False).net
            prev = dict(prev_net.named_parameters())
            frozen_names = [n for n, p in model.net.named_parameters() if not p.requires_grad]
            assert all(torch.equal(snap.before[n], prev[n]) for n in frozen_names)
        train = set(trainable_parameter_names(model.net, spec))
        unused = _params_without_gradient(spec, spec.init_from)
        assert all(n.startswith("reference_net.") for n in unused), sorted(unused)[:3]
        after = dict(model.net.named_parameters())
        for name, before in snap.before.items():
            if name in train and name not in unused:
                assert not torch.equal(before, after[name]), f"{spec.name}: trainable {name} did not change"
            else:
                assert torch.equal(before, after[name]), f"{spec.name}: frozen {name} changed"
        assert (export_dir / "DONE").is_file()
        previous = export_dir


def test_timestep_bias_reaches_the_training_draws():
    """A stage's ``timestep_bias`` sets the LitModule's timestep weights at setup; every training step then draws
    from them (a spy records the real sampler's draws), and a stage without it keeps the official uniform draw."""
    with pytest.raises(InputError, match="stage 'audio_motion' timestep_bias"):
        stage_from_conf("audio_motion", timestep_bias={"strategy": "later", "multiplier": -1})
    for bias in ({"strategy": "range", "begin": 900, "end": 1000, "multiplier": 1e9}, None):
        spec = stage_from_conf("image", num_frames=1, batch_size=4, max_steps=3, lr=1e-4, timestep_bias=bias)
        assert StageSpec(**spec.to_dict()).timestep_bias == spec.timestep_bias  # the spec's record round-trips
        model = lit_module(seed=3)
        drawn = []
        real = model.targets.sample_timesteps

        def spy(*args, **kwargs):
            t = real(*args, **kwargs)
            drawn.append(t)
            return t

        model.targets.sample_timesteps = spy
        trainer = pl.Trainer(callbacks=[StageScheduler(spec, 0, ["image"]), ConditionDropout({"uncond": 0.0})],
                             max_steps=spec.max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model, datamodule=fakes.RandomClipsDataModule(num_frames=1, batch_size=4))
        t = torch.cat(drawn)
        assert len(drawn) == 3 and t.numel() == 12
        if bias is None:
            assert model.timestep_weights is None and int(t.min()) < 900  # 12 uniform draws all >= 900: p = 1e-12
        else:
            assert model.timestep_weights.shape == (1000,) and bool((t >= 900).all())


def test_lr_scale_gives_a_group_its_own_rate():
    """A stage's ``lr_scale`` splits the optimizer by parameter group: after one AdamW step (whose first update is
    at most the rate, reached where the gradient is not tiny) the scaled group moved by up to 4x the rate, the others
    by up to the rate."""
    with pytest.raises(InputError, match="lr_scale names 'reference_net', which this stage does not train"):
        stage_from_conf("audio_motion", lr_scale={"reference_net": 2})
    with pytest.raises(InputError, match="lr_scale.audio_projection must be a positive number"):
        stage_from_conf("audio_motion", lr_scale={"audio_projection": 0})
    assert stage_from_conf("joint").lr_scale is None  # the shipped configs leave it out (stage keys unchanged)
    spec = stage_from_conf("joint", num_frames=2, batch_size=1, max_steps=1, lr_scale={"audio_attention": 4})
    assert StageSpec(**spec.to_dict()).lr_scale == {"audio_attention": 4.0}  # the spec's record round-trips
    model = lit_module(seed=5)
    before = {n: p.detach().clone() for n, p in model.net.named_parameters()}
    trainer = pl.Trainer(callbacks=[StageScheduler(spec, 2, ["image", "audio_motion", "joint"]),
                                    ConditionDropout({"uncond": 0.0})],
                         max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=fakes.RandomClipsDataModule(num_frames=2, batch_size=1))
    rates = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
    lr = rates["rest"]  # the module's optimizer rate (a run's config sets it to the stage's lr)
    assert rates == pytest.approx({"rest": lr, "audio_attention": 4 * lr})
    groups = model.net.parameter_groups()

    def step_size(group: str) -> float:
        moved = torch.cat([(p.detach() - before[n]).abs().flatten() for n, p in model.net.named_parameters()
                           if n in groups[group]])
        return float(moved.max())

    assert step_size("audio_attention") == pytest.approx(4 * lr, rel=0.05)
    assert step_size("denoiser_base") == pytest.approx(lr, rel=0.05)
    for group in ("motion_modules", "denoiser_base", "audio_projection"):
        assert step_size(group) <= lr * 1.05


def test_lr_schedule_decays_a_stage_rate_over_its_own_steps():
    """A stage's ``lr_schedule`` replaces the model's constant scheduler for that stage: the rate falls along a
    cosine from the stage's ``lr`` to ``final_factor`` x it at the stage's last step, each group (``lr_scale``) alike;
    bad settings are one-line errors, and the shipped stage configs leave it out (stage keys unchanged)."""
    with pytest.raises(InputError, match="lr_schedule: name must be one of"):
        stage_from_conf("audio_motion", lr_schedule={"name": "step"})
    with pytest.raises(InputError, match="unknown settings"):
        stage_from_conf("audio_motion", lr_schedule={"name": "cosine", "gamma": 0.5})
    with pytest.raises(InputError, match="0 <= final_factor <= 1"):
        stage_from_conf("audio_motion", lr_schedule={"name": "cosine", "final_factor": 2})
    assert stage_from_conf("audio_motion").lr_schedule is None
    spec = stage_from_conf("joint", num_frames=2, batch_size=1, max_steps=4, lr=1e-3, lr_scale={"audio_attention": 2},
                           lr_schedule={"name": "cosine", "final_factor": 0.1})
    assert spec.lr_schedule == {"name": "cosine", "warmup_steps": 1, "final_factor": 0.1}
    assert StageSpec(**spec.to_dict()).lr_schedule == spec.lr_schedule  # the spec's record round-trips
    model = lit_module(seed=5)
    seen = []

    class Rates(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append({g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups})

    trainer = pl.Trainer(callbacks=[StageScheduler(spec, 2, ["image", "audio_motion", "joint"]),
                                    ConditionDropout({"uncond": 0.0}), Rates()],
                         max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=fakes.RandomClipsDataModule(num_frames=2, batch_size=1))
    base = seen[0]["rest"]
    factors = [r["rest"] / base for r in seen] + [trainer.optimizers[0].param_groups[0]["lr"] / base]
    # steps 0..3, then the rate once the stage ends: 1 (the warm-up step), then the cosine over the 3 steps after it
    expected = [1.0] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 3)) for k in (0, 1, 2, 3)]
    assert factors == pytest.approx(expected)
    assert all(r["audio_attention"] == pytest.approx(2 * r["rest"]) for r in seen)


def test_restore_takes_named_parameters_from_another_folder(tmp_path):
    """``restore`` puts the named tensors of another export over init_from's weights and its zero_init; everything
    else is init_from's, and bad settings are one-line input errors."""
    from vexpress.training.export import export_stage

    source, start = tiny_network(), tiny_network()
    with torch.no_grad():
        for n, p in source.named_parameters():
            p.fill_(0.5 if "attn2.to_out" in n else -0.5)
        for p in start.parameters():
            p.add_(0.25)
    export_stage(tmp_path / "source", source)
    export_stage(tmp_path / "start", start)
    spec = stage_from_conf("audio_motion", init_from=str(tmp_path / "start"),
                           restore={"from": str(tmp_path / "source"), "params": ["denoising_unet.*.attn2.to_out.*"]})
    net = tiny_network()
    report = apply_stage(net, spec)
    assert report.restored and all(".attn2.to_out." in n for n in report.restored)
    assert report.zeroed and not set(report.zeroed) & set(report.restored)  # the motion proj_out still start at 0
    want = dict(start.named_parameters())
    for n, p in net.named_parameters():
        if n in report.restored:
            assert torch.all(p == 0.5), n
        elif n in report.zeroed:
            assert torch.count_nonzero(p) == 0, n
        else:
            assert torch.equal(p, want[n]), n
    assert "tensors from" in report.summary()
    check_trainable(net, spec)
    # what init_from does not hold keeps the network's own values, not the restore folder's
    from vexpress.training.export import load_weights

    def without_projection(target, folder):
        kept = {n: p.detach().clone() for n, p in target.named_parameters() if n.startswith("audio_projection")}
        load_weights(target, folder)
        if folder == spec.init_from:  # a starting point that lacks the audio projection, as a foundation does
            with torch.no_grad():
                for n, p in target.named_parameters():
                    if n in kept:
                        p.copy_(kept[n])

    fresh = tiny_network()
    own = {n: p.detach().clone() for n, p in fresh.named_parameters() if n.startswith("audio_projection")}
    apply_stage(fresh, spec, load=without_projection)
    assert own and all(torch.equal(p, own[n]) for n, p in fresh.named_parameters() if n in own)
    for bad in ({"from": str(tmp_path / "source")}, {"params": ["x"]}, {"from": "x", "params": ["y"], "to": 1}, 3):
        with pytest.raises(InputError, match="restore"):
            stage_from_conf("audio_motion", restore=bad)
    with pytest.raises(InputError, match="init_from"):
        apply_stage(tiny_network(), stage_from_conf("audio_motion", restore={"from": str(tmp_path / "source"),
                                                                             "params": ["x"]}))
    with pytest.raises(InputError, match="matches no parameter"):
        apply_stage(tiny_network(), stage_from_conf("audio_motion", init_from=str(tmp_path / "start"),
                                                    restore={"from": str(tmp_path / "source"), "params": ["nope*"]}))
