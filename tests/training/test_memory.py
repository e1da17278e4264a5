"""The training memory arithmetic (``vexpress.training.memory``) against measurements of a real step, small size.

Two checks, both on the tiny network (real layers, small widths) at 128x128 pixels, float32 on the CPU:
- activations: the bytes autograd actually keeps (every saved tensor, once per storage, parameters excluded),
  counted with ``saved_tensors_hooks``, against the per-layer walk, for each stage;
- peak: the process's allocation peak during a warm training step (glibc counters, ``PeakMeter``) against the
  estimate's gradients + activations (+ recompute) + workspace, with and without gradient checkpointing.
The full-size figures are printed by ``benchmarks/bench_memory.py``.
"""

from __future__ import annotations

import pytest
import torch

from vexpress.models import VExpressConfig, VExpressNet
from vexpress.training.memory import (
    PeakMeter,
    estimate_training_memory,
    malloc_in_use,
    min_gpus,
    per_device_bytes,
    walk_activations,
)
from vexpress.training.stages import StageSpec, apply_stage

STAGES = {
    "image": ["reference_net", "denoiser_base", "reference_attention", "v_kps_guider"],
    "audio_motion": ["audio_projection", "audio_attention", "motion_modules"],
    "joint": ["reference_net", "denoiser_base", "reference_attention", "audio_attention", "motion_modules",
              "v_kps_guider", "audio_projection"],
}
ZERO = ["denoising_unet.*temporal_transformer.proj_out.*", "denoising_unet.*.attn2.to_out.*"]
SIZE, FRAMES = 128, 4


def _setup(stage: str, checkpointing: bool = False):
    torch.manual_seed(0)
    cfg = VExpressConfig.tiny()
    net = VExpressNet(cfg)
    apply_stage(net, StageSpec(name=stage, trainable=STAGES[stage], zero_init=ZERO,
                               gradient_checkpointing=checkpointing))
    net.train()
    g = torch.Generator().manual_seed(1)
    h = SIZE // cfg.latent_downscale
    x = dict(noisy=torch.randn(1, 4, FRAMES, h, h, generator=g), ref_latents=torch.randn(1, 4, h, h, generator=g),
             kps_images=torch.rand(1, 3, FRAMES, SIZE, SIZE, generator=g),
             audio_windows=torch.randn(1, FRAMES, 10, cfg.audio_embedding_dim, generator=g))
    return cfg, net, x


def _forward(net, x):
    return net(x["noisy"], torch.tensor([500]), ref_latents=x["ref_latents"], audio_windows=x["audio_windows"],
               kps_images=x["kps_images"])


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_activation_arithmetic_matches_what_autograd_keeps(stage):
    cfg, net, x = _setup(stage)
    skip = {p.untyped_storage().data_ptr() for p in net.parameters()}
    skip |= {b.untyped_storage().data_ptr() for b in net.buffers()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() not in skip:
            kept[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = _forward(net, x)
    measured = sum(kept.values())
    predicted = 4 * sum(layer.elements for layer in walk_activations(cfg, SIZE, SIZE, FRAMES, 1, STAGES[stage]))
    assert 0.85 <= measured / predicted <= 1.15, (stage, measured, predicted)
    del out


@pytest.mark.skipif(malloc_in_use() is None, reason="PeakMeter needs glibc's mallinfo2 (Linux)")
@pytest.mark.parametrize("checkpointing", [False, True])
def test_estimated_peak_bounds_a_measured_step(checkpointing):
    cfg, net, x = _setup("audio_motion", checkpointing)

    def step():
        _forward(net, x).float().pow(2).mean().backward()

    step()  # warm-up: one-off allocations of the math libraries are not the step's memory
    for p in net.parameters():
        p.grad = None
    with PeakMeter() as meter:
        step()
    est = estimate_training_memory(cfg, STAGES["audio_motion"], frames=FRAMES, height=SIZE, width=SIZE,
                                   precision="32-true", optimizer="sgd", checkpointing=checkpointing)
    c = est.components
    predicted = c["grads"] + c["activations"] + c["recompute"] + c["workspace"]
    ratio = meter.working_bytes / predicted
    # tight without checkpointing (the whole graph is alive at the end of the forward); with checkpointing the step
    # keeps a few MB at this size and allocator effects of the same order make the ratio vary (0.4-1.25 seen)
    low, high = (0.8, 1.15) if not checkpointing else (0.35, 1.5)
    assert low <= ratio <= high, (meter.working_bytes, predicted, meter.where)


def test_sharding_arithmetic():
    from vexpress.training.memory import parameter_counts

    cfg = VExpressConfig.sd15()
    counts = parameter_counts(cfg)
    est = estimate_training_memory(cfg, STAGES["joint"], frames=8, counts=counts)
    c = est.components
    assert per_device_bytes(est, "ddp", 8) == est.total
    fsdp1, fsdp8 = per_device_bytes(est, "fsdp", 1), per_device_bytes(est, "fsdp", 8)
    assert fsdp8 < fsdp1 and fsdp8 > c["activations"]
    z2 = per_device_bytes(est, "deepspeed_stage_2", 8)
    assert z2 < est.total and z2 > 2 * (est.params_trainable_count + est.params_frozen_count)
    # full fp32 AdamW training of the joint stage does not fit one 24 GB GPU with any strategy that keeps replicas
    assert min_gpus(est, "ddp", 24e9) is None
    assert min_gpus(est, "fsdp", 141e9) == 1
