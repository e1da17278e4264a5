"""One training step of the real SD1.5-sized network (2.25 B parameters, random weights) per stage, on the CPU.

What runs at full width: the ReferenceNet, the denoising UNet with all 21 motion modules, the V-Kps guider and the
4-layer audio projection, built from ``VExpressConfig.sd15()`` and put into the stage by ``apply_stage`` with the
stage's own YAML (``conf/stage/*.yaml``). What is reduced: the resolution (64x64 pixels -> 8x8 latents) and the
clip (4 frames instead of 20 in the audio+motion stage, 2 single-frame samples instead of 8 in the image stage).

Memory (fp32 weights alone are 9.0 GB; each test stays under ~12 GB peak, run them one at a time):
- audio+motion: 527 M trainable parameters, so the gradients (2.1 GB) are kept and a plain SGD step (no optimizer
  state) is taken; gradient checkpointing as the stage config says (on).
- image: 1.71 B trainable parameters, so the gradients would add 6.8 GB. Each gradient is used and freed as soon as
  it is complete (a post-accumulate-grad hook checks it and applies the SGD update in place, "optimizer in
  backward"), so at most a few gradients exist at a time. AdamW states (8 B per trainable parameter) do not fit
  next to the weights on this 24 GB machine for either stage; ``vexpress.training.memory`` has the arithmetic.
"""

from __future__ import annotations

import gc
import math

import pytest
import torch
from omegaconf import OmegaConf

from tests.models.test_sd15_size import ROOT, load_stage, official_split
from vexpress.models import DropMask, VExpressConfig, VExpressNet
from vexpress.training.losses import diffusion_loss
from vexpress.training.noise import DiffusionTargets
from vexpress.training.stages import apply_stage, check_trainable

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]


def scheduler():
    from hydra.utils import instantiate

    return instantiate(OmegaConf.load(ROOT / "conf" / "noise_scheduler" / "zero_snr_v.yaml"))


def batch(cfg: VExpressConfig, b: int, frames: int, size: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    h = size // cfg.latent_downscale
    return {
        "latents": torch.randn(b, 4, frames, h, h, generator=g),
        "ref_latents": torch.randn(b, 4, h, h, generator=g),
        "kps_images": torch.rand(b, 3, frames, size, size, generator=g),
        "audio_windows": torch.randn(b, frames, cfg.audio_rows_per_frame, cfg.audio_embedding_dim, generator=g),
    }


def loss_of(net: VExpressNet, x: dict, seed: int = 1) -> torch.Tensor:
    targets = DiffusionTargets(scheduler())
    g = torch.Generator().manual_seed(seed)
    lat = x["latents"]
    noise = targets.sample_noise(lat, 0.05, g)
    t = targets.sample_timesteps(lat.shape[0], g, lat.device)
    pred = net(targets.add_noise(lat, noise, t), t, ref_latents=x["ref_latents"], audio_windows=x["audio_windows"],
               kps_images=x["kps_images"], drop=DropMask.none(lat.shape[0]))
    return diffusion_loss(pred, targets.target(lat, noise, t), targets.snr(t), snr_gamma=5.0).loss


def build(stage: str):
    torch.manual_seed(0)
    net = VExpressNet(VExpressConfig.sd15()).train()
    spec = load_stage(stage)
    report = apply_stage(net, spec)
    check_trainable(net, spec)
    return net, spec, report


@pytest.fixture(autouse=True)
def _threads_and_cleanup():
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)
    gc.collect()


def test_audio_motion_stage_step_at_sd15_size():
    net, spec, report = build("audio_motion")
    assert spec.gradient_checkpointing  # the stage config's choice (official stage 2)
    assert (report.num_trainable, report.num_frozen) == official_split("audio_motion")
    assert report.num_trainable == 526_721_024

    loss = loss_of(net, batch(net.config, b=1, frames=4, size=64))
    assert math.isfinite(loss.item())
    loss.backward()

    params = dict(net.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    with_grad = {n for n, p in params.items() if p.grad is not None}
    assert with_grad == trainable  # every trainable parameter has a gradient, no frozen one has
    assert all(bool(torch.isfinite(params[n].grad).all()) for n in with_grad)
    # the audio and motion output projections start at zero, so only they get a non-zero gradient at step 0
    nonzero = {n for n in with_grad if bool(params[n].grad.any())}
    assert nonzero and all(".attn2.to_out." in n or "temporal_transformer.proj_out." in n for n in nonzero)

    probe = "denoising_unet.up_blocks.3.motion_modules.2.temporal_transformer.proj_out.weight"
    before = params[probe].detach().clone()
    torch.optim.SGD([params[n] for n in sorted(trainable)], lr=1e-3).step()
    assert not torch.equal(before, params[probe])
    del net, params, loss


def test_image_stage_step_at_sd15_size():
    net, spec, report = build("image")
    assert not spec.gradient_checkpointing
    assert (report.num_trainable, report.num_frozen) == official_split("image")

    lr = 1e-3
    seen: dict[str, tuple[bool, bool]] = {}  # name -> (finite, non-zero)

    def step_and_free(name: str):
        def hook(p: torch.Tensor) -> None:
            seen[name] = (bool(torch.isfinite(p.grad).all()), bool(p.grad.any()))
            with torch.no_grad():
                p.add_(p.grad, alpha=-lr)
            p.grad = None

        return hook

    params = dict(net.named_parameters())
    handles = [p.register_post_accumulate_grad_hook(step_and_free(n)) for n, p in params.items() if p.requires_grad]
    probe = "denoising_unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1_5.to_out.0.bias"
    before = params[probe].detach().clone()

    loss = loss_of(net, batch(net.config, b=2, frames=1, size=64))
    assert math.isfinite(loss.item())
    loss.backward()
    for h in handles:
        h.remove()

    trainable = {n for n, p in params.items() if p.requires_grad}
    assert all(p.grad is None for p in params.values())  # frozen ones never got one, trainable ones were freed
    # The ReferenceNet's output is discarded (only its bank is used, spec §1.3), so its conv_out (trainable in the
    # official stage 1 too) is the one trainable tensor without a gradient; our forward does not even run it.
    assert trainable - set(seen) == {"reference_net.unet.conv_out.weight", "reference_net.unet.conv_out.bias"}
    assert set(seen) <= trainable
    # gradients are finite; all are non-zero except the ReferenceNet's attn2 q/k/v, which act on the all-zero text
    # token (spec §1.3), and the guider's layers behind its zero-initialised conv_out
    assert all(finite for finite, _ in seen.values())
    zero = {n for n, (_, nonzero) in seen.items() if not nonzero}
    assert all((".attn2.to_" in n and n.startswith("reference_net")) or n.startswith("v_kps_guider.")
               for n in zero), sorted(zero)[:5]
    assert not torch.equal(before, params[probe])
    del net, params, loss
