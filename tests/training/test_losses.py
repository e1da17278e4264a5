"""Loss and forward-process maths against the definitions in spec §4.1 (and diffusers' own scheduler)."""

from __future__ import annotations

import pytest
import torch

from tests.training.helpers import scheduler
from vexpress.training.losses import diffusion_loss, lip_weight_map, min_snr_weights
from vexpress.training.noise import DiffusionTargets


def test_zero_terminal_snr_and_trailing_velocity_match_diffusers():
    sched = scheduler()
    t = DiffusionTargets(sched)
    assert t.alphas_cumprod[-1] == 0  # zero terminal SNR
    assert t.v_prediction
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 2, 8, 8, generator=g)
    eps = torch.randn(3, 4, 2, 8, 8, generator=g)
    ts = torch.tensor([0, 500, 999])
    assert torch.allclose(t.add_noise(x0, eps, ts), sched.add_noise(x0, eps, ts), atol=1e-6)
    assert torch.allclose(t.target(x0, eps, ts), sched.get_velocity(x0, eps, ts), atol=1e-6)
    snr = t.snr(ts)
    assert snr[2] == 0 and snr[0] > snr[1] > 0


def test_noise_offset_is_constant_over_frames_and_space():
    lat = torch.zeros(2, 4, 3, 8, 8)
    a = DiffusionTargets.sample_noise(lat, 0.0, torch.Generator().manual_seed(1))
    b = DiffusionTargets.sample_noise(lat, 0.5, torch.Generator().manual_seed(1))
    shift = b - a
    assert shift.std(dim=(2, 3, 4)).max() < 1e-6  # one offset per (clip, channel)
    assert shift.abs().max() > 0


def test_min_snr_weights_follow_the_official_formula():
    snr = torch.tensor([0.0, 1.0, 4.0, 100.0])
    w = min_snr_weights(snr, 5.0, v_prediction=True)
    expect = torch.minimum(snr + 1, torch.tensor(5.0)) / (snr + 1)
    assert torch.allclose(w, expect)
    assert w[0] == 1.0  # zero-SNR step keeps full weight with v-prediction
    assert torch.equal(min_snr_weights(snr, 0.0, True), torch.ones(4))
    assert torch.allclose(min_snr_weights(torch.tensor([10.0]), 5.0, False), torch.tensor([0.5]))


def test_lip_weight_and_loss_reduce_as_the_official_code():
    g = torch.Generator().manual_seed(2)
    pred, target = torch.randn(2, 4, 3, 8, 8, generator=g), torch.randn(2, 4, 3, 8, 8, generator=g)
    mask = torch.zeros(2, 1, 3, 8, 8)
    mask[..., 4:, 2:6] = 1
    snr = torch.tensor([0.5, 20.0])
    out = diffusion_loss(pred, target, snr, snr_gamma=5.0, v_prediction=True, lip_masks=mask, lip_loss_weight=3.0)
    err = (pred - target) ** 2 * ((3.0 - 1) * mask + 1)
    w = torch.minimum(snr + 1, torch.tensor(5.0)) / (snr + 1)
    assert torch.allclose(out.loss, (err.mean(dim=(1, 2, 3, 4)) * w).mean())
    assert torch.allclose(lip_weight_map(mask, 1.0), torch.ones_like(mask))
    plain = diffusion_loss(pred, target, snr, snr_gamma=5.0, lip_masks=mask, lip_loss_weight=1.0)
    assert plain.loss < out.loss
    assert torch.allclose(out.lip_mse, ((pred - target) ** 2 * mask).sum() / (mask.sum() * 4))


def test_loss_rejects_mismatched_masks():
    from vexpress.errors import ShapeError

    with pytest.raises(ShapeError):
        diffusion_loss(torch.zeros(1, 4, 2, 8, 8), torch.zeros(1, 4, 2, 8, 8), torch.zeros(1),
                       lip_masks=torch.zeros(1, 1, 3, 8, 8))
