"""The ``lcm`` sampler: one step is the model's closed-form clean estimate, its per-step estimate is exactly the
distillation's consistency function, its timesteps lie on the distillation grid, its noise is seeded, and guidance is
off by default in the Python API and the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vexpress.pipelines.guidance import Guidance
from vexpress.pipelines.schedulers import default_guidance, make_scheduler, sampler_name
from vexpress.training.distill import boundary_scalings, consistency_output, solver_grid


def _conditions(pipe, num_frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 4, num_frames, 8, 8, generator=g)
    bank = pipe.net.encode_reference(torch.randn(1, 4, 8, 8, generator=g))
    audio = pipe.encode_audio(torch.randn(3 * num_frames, pipe.net.config.audio_embedding_dim, generator=g),
                              num_frames, features=True)
    kps = pipe.encode_kps(np.tile(np.array([[20.0, 25], [44, 25], [32, 40]], np.float32), (num_frames, 1, 1)),
                          64, 64)
    return latents, bank, audio, kps


def test_one_step_is_the_closed_form_clean_estimate(tiny_pipe):
    """Student = teacher (an untrained student is the teacher's copy): one LCM step from x_T returns
    x0 = sqrt(a) x_T - sqrt(1 - a) v at t = 999. Step handling: LCM's single timestep is 999 (the end of the
    distillation grid), where zero terminal SNR makes a = alpha_bar_999 = 0 exactly, so x0 = -v; LCM then applies
    the consistency scalings, c_out(999) = 1 - 1.3e-9 and c_skip(999) = 2.5e-9 (timestep_scaling 10), so the
    result equals -v to float precision (checked against the exact expression too)."""
    frames = 6  # one context window: no overlap averaging
    latents, bank, audio, kps = _conditions(tiny_pipe, frames)
    sched = make_scheduler("lcm")
    assert float(sched.alphas_cumprod[999]) == 0.0
    out = tiny_pipe.denoise(latents, bank, audio, kps, num_inference_steps=1, guidance=Guidance(1.0),
                            context_frames=8, context_overlap=2, scheduler=sched, progress=False)
    assert sched.timesteps.tolist() == [999]
    with torch.no_grad():
        v = tiny_pipe.net.denoising_unet(latents, torch.tensor(999), audio_tokens=audio.window(slice(0, frames)),
                                         kps_features=kps.window(slice(0, frames)), reference=bank).float()
    a = sched.alphas_cumprod[999].double()
    x0 = (a.sqrt() * latents.double() - (1 - a).sqrt() * v.double()).float()
    assert torch.allclose(x0, -v)
    scale = float(x0.abs().max())
    assert float((out - x0).abs().max()) <= 1e-6 * scale
    c_skip, c_out = (float(c) for c in boundary_scalings(torch.tensor([999])))
    assert float((out - (c_out * x0 + c_skip * latents)).abs().max()) <= 1e-6 * scale


def test_each_step_applies_the_distillation_consistency_function():
    """The sampler's denoised estimate at every step is f(x, t) of training (same c_skip/c_out and x0 from v)."""
    sched = make_scheduler("lcm")
    sched.set_timesteps(8)
    grid = set(solver_grid(1000, 20).tolist())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 3, 4, 4, generator=g)
    for t in sched.timesteps:
        assert int(t) in grid
        v = torch.randn(x.shape, generator=g)
        nxt, denoised = sched.step(v, t, x, return_dict=False)
        expect = consistency_output(x, v, t.view(1), sched.alphas_cumprod)
        assert torch.allclose(denoised, expect, atol=1e-5), int(t)
        x = nxt


def test_step_counts_use_the_distillation_grid():
    sched = make_scheduler("lcm")
    for n, first in ((1, [999]), (2, [999, 499]), (4, [999, 759, 499, 259])):
        sched.set_timesteps(n)
        assert sched.timesteps.tolist() == first
    sched.set_timesteps(8)
    assert len(sched.timesteps) == 8 and sched.timesteps[0] == 999
    assert sampler_name(sched) == "lcm" and default_guidance("lcm") == 1.0 and default_guidance("ddim") == 3.5


def test_multistep_noise_is_seeded(tiny_pipe):
    latents, bank, audio, kps = _conditions(tiny_pipe, 4)

    def run(scheduler):
        return tiny_pipe.denoise(latents, bank, audio, kps, num_inference_steps=2, guidance=Guidance(1.0),
                                 context_frames=8, context_overlap=2, scheduler=scheduler, progress=False)

    a, b = run(make_scheduler("lcm", noise_seed=1)), run(make_scheduler("lcm", noise_seed=1))
    c = run(make_scheduler("lcm", noise_seed=2))
    assert torch.isfinite(a).all() and torch.equal(a, b) and not torch.equal(a, c)
    s = make_scheduler("lcm")
    s.manual_seed(5)
    assert type(s).from_config(s.config).config.noise_seed == 5  # the pipeline's fresh copy keeps the seed


@pytest.mark.slow
def test_generate_with_lcm_runs_one_branch_by_default(tiny_pipe, wav_file):
    from vexpress.pipelines.vexpress_pipeline import prepare_inputs

    photo = np.full((64, 64, 3), 90, np.uint8)
    kps = np.array([[24.0, 26.0], [40.0, 26.0], [32.0, 38.0]], np.float32)
    inputs = prepare_inputs(photo, wav_file(0.3), reference_kps=kps, height=64, width=64, fps=10)
    opts = dict(context_frames=8, context_overlap=2, median_filter=False, progress=False)
    a = tiny_pipe.generate(inputs, sampler="lcm", seed=3, **opts)
    assert a.info["sampler"] == "lcm" and a.info["steps"] == 4 and a.info["branches"] == ["cond"]
    b = tiny_pipe.generate(inputs, sampler="lcm", seed=3, num_inference_steps=4, **opts)
    c = tiny_pipe.generate(inputs, sampler="lcm", seed=4, num_inference_steps=4, **opts)
    assert torch.equal(a.frames, b.frames) and not torch.equal(a.frames, c.frames)
    guided = tiny_pipe.generate(inputs, sampler="lcm", guidance_scale=2.0, num_inference_steps=1, **opts)
    assert guided.info["branches"] == ["uncond", "cond"]


@pytest.mark.parametrize("extra,expect", [([], 1.0), (["guidance_scale=2.5"], 2.5)])
def test_generate_config_defaults_guidance_off_for_lcm(extra, expect):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from vexpress.utils.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("generate", overrides=["sampler=lcm", *extra])
        assert cfg.guidance_scale == expect
        assert sampler_name(instantiate(cfg.sampler)) == "lcm"
        assert compose("generate", overrides=[]).guidance_scale == 3.5
