"""Behaviour of the network beyond the official vectors: drop masks, shared references, caching, errors."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.tiny import tiny_inputs, tiny_net
from vexpress.errors import ShapeError
from vexpress.models import DropMask, ReferenceBank, VExpressConfig, parameter_group


@pytest.fixture(scope="module")
def net():
    return tiny_net()


@pytest.fixture(scope="module")
def x():
    return tiny_inputs(batch=2, frames=4)


def _f64(net, x):
    """Equivalence checks run in float64: the random tiny net amplifies float32 reordering noise (~1e-4)."""
    return tiny_net().double(), {k: v.double() if v.is_floating_point() else v for k, v in x.items()}


def _run(net, x, **kw):
    with torch.no_grad():
        return net(x["noisy_latents"], x["timesteps"], ref_latents=x["ref_latents"], audio_windows=x["audio_windows"],
                   kps_images=x["kps_images"], **kw)


def test_output_shape_and_every_condition_matters(net, x):
    full = _run(net, x)
    assert full.shape == x["noisy_latents"].shape
    for field in ("reference", "kps", "audio"):
        mask = DropMask.none(2)
        setattr(mask, field, torch.ones(2, dtype=torch.bool))
        assert (_run(net, x, drop=mask) - full).abs().max() > 1e-4, f"dropping {field} changed nothing"


def test_dropped_reference_equals_an_all_zero_bank(net, x):
    """Our shortcut (output bias, no attention) is the official zero-bank computation, exactly."""
    with torch.no_grad():
        bank = net.encode_reference(x["ref_latents"])
        zero = ReferenceBank({k: torch.zeros_like(v) for k, v in bank.features.items()})
        kw = dict(audio_tokens=net.encode_audio(x["audio_windows"]), kps_features=net.encode_kps(x["kps_images"]))
        a = net.denoising_unet(x["noisy_latents"], x["timesteps"], reference=zero, **kw)
        b = net.denoising_unet(x["noisy_latents"], x["timesteps"], reference=bank,
                               drop=DropMask(torch.ones(2), torch.zeros(2), torch.zeros(2)), **kw)
        c = net.denoising_unet(x["noisy_latents"], x["timesteps"], reference=None, **kw)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b, c, rtol=0, atol=0)


def test_dropped_audio_equals_zero_tokens(net, x):
    with torch.no_grad():
        tokens = net.encode_audio(x["audio_windows"])
        a = net.denoising_unet(x["noisy_latents"], x["timesteps"], audio_tokens=torch.zeros_like(tokens))
        b = net.denoising_unet(x["noisy_latents"], x["timesteps"], audio_tokens=tokens,
                               drop=DropMask(torch.zeros(2), torch.zeros(2), torch.ones(2)))
        c = net.denoising_unet(x["noisy_latents"], x["timesteps"], audio_tokens=None)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


def test_drop_is_per_sample(net, x):
    """Dropping sample 0's conditions leaves sample 1's prediction unchanged, and matches a lone forward."""
    net, x = _f64(net, x)
    mixed = DropMask(torch.tensor([True, False]), torch.tensor([True, False]), torch.tensor([False, True]))
    both = _run(net, x, drop=mixed)
    for i in range(2):
        xi = {k: v[i:i + 1] for k, v in x.items()}
        mi = DropMask(mixed.reference[i:i + 1], mixed.kps[i:i + 1], mixed.audio[i:i + 1])
        torch.testing.assert_close(both[i:i + 1], _run(net, xi, drop=mi), rtol=1e-10, atol=1e-10)


def test_shared_reference_bank_equals_repeated_reference(net, x):
    """A batch-1 bank (inference) broadcasts like the official per-frame repeat of the same reference."""
    net, x = _f64(net, x)
    with torch.no_grad():
        one = net.encode_reference(x["ref_latents"][:1])
        rep = net.encode_reference(x["ref_latents"][:1].repeat(2, 1, 1, 1))
        a = net.denoising_unet(x["noisy_latents"], x["timesteps"], reference=one)
        b = net.denoising_unet(x["noisy_latents"], x["timesteps"], reference=rep)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_reference_keys_values_are_computed_once_per_bank(net, x):
    calls = []
    handle = net.denoising_unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1_5.to_k.register_forward_hook(
        lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            bank = net.encode_reference(x["ref_latents"])
            for _ in range(3):  # three "denoising steps" with the same bank
                net.denoising_unet(x["noisy_latents"], x["timesteps"], reference=bank)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_gradient_checkpointing_gives_the_same_gradients():
    x = tiny_inputs(batch=1, frames=2)
    grads = []
    for ckpt in (False, True):
        net = tiny_net(seed=3).train()
        net.set_gradient_checkpointing(denoiser=ckpt, reference_net=ckpt)
        out = net(x["noisy_latents"], x["timesteps"], ref_latents=x["ref_latents"], audio_windows=x["audio_windows"],
                  kps_images=x["kps_images"])
        out.square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)


def test_reference_net_up_blocks_3_gets_no_output_gradient_path():
    """Only bank features matter: nothing after the last bank block is computed (conv_out gets no gradient)."""
    x = tiny_inputs(batch=1, frames=2)
    net = tiny_net().train()
    out = net(x["noisy_latents"], x["timesteps"], ref_latents=x["ref_latents"])
    out.mean().backward()
    assert net.reference_net.unet.conv_out.weight.grad is None
    assert net.reference_net.unet.down_blocks[0].resnets[0].conv1.weight.grad is not None


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda x: x.update(kps_images=x["kps_images"][:, :, :3]), "kps images"),
        (lambda x: x.update(audio_windows=x["audio_windows"][:, :3]), "audio windows"),
        (lambda x: x.update(kps_images=x["kps_images"][:, :2]), "kps images"),
        (lambda x: x.update(ref_latents=x["ref_latents"][..., :4]), "reference latents"),
        (lambda x: x.update(noisy_latents=x["noisy_latents"][:, :3]), "channels"),
        (lambda x: x.update(audio_windows=torch.randn(2, 4, 10, 7)), "audio windows must be"),
        (lambda x: x.update(noisy_latents=x["noisy_latents"][:, :, 0]), "noisy latents"),
    ],
)
def test_shape_errors_are_clear(net, change, match):
    x = tiny_inputs(batch=2, frames=4)
    change(x)
    with pytest.raises(ShapeError, match=match):
        _run(net, x)


def test_more_frames_than_the_position_table_is_an_error(net):
    x = tiny_inputs(batch=1, frames=33, size=16)
    with pytest.raises(ShapeError, match="33 frames in one window exceed"):
        with torch.no_grad():
            net(x["noisy_latents"], x["timesteps"])


def test_drop_mask_validation():
    with pytest.raises(ShapeError):
        DropMask(torch.zeros(2), torch.zeros(3), torch.zeros(2))
    m = DropMask.cat([DropMask.none(1), DropMask.all(2)])
    assert m.reference.tolist() == [False, True, True]


def test_parameter_groups_follow_the_official_rules():
    net = tiny_net()
    groups = net.parameter_groups()
    assert all(groups.values())
    assert all("up_blocks.3" in n for n in groups["reference_net_frozen"])
    assert parameter_group("denoising_unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight") == \
        "audio_attention"
    assert parameter_group("denoising_unet.mid_block.attentions.0.transformer_blocks.0.norm1_5.bias") == \
        "reference_attention"
    assert parameter_group("denoising_unet.down_blocks.3.motion_modules.0.temporal_transformer.proj_out.bias") == \
        "motion_modules"
    assert sum(len(v) for v in groups.values()) == len(list(net.parameters()))


def test_config_round_trip_and_validation():
    cfg = VExpressConfig.tiny(audio_embedding_dim=40, latent_downscale=4)
    assert VExpressConfig.from_dict(cfg.to_dict()) == cfg
    bad = cfg.to_dict()
    bad["v_kps_guider"]["block_out_channels"] = [8, 16, 32, 32]  # downscales by 8, latents are 1/4
    with pytest.raises(ValueError, match="downscales by 8"):
        VExpressConfig.from_dict(bad)


def test_frozen_zero_motion_modules_are_skipped_exactly():
    """Motion modules with a zero proj_out and nothing trainable (the image stage) are the identity: skipped, and
    the output is bit-identical to computing them; a changed proj_out (an optimizer step) switches them back on."""
    from tests.helpers.tiny import tiny_net as make

    x = tiny_inputs(batch=1, frames=2)
    net = make(randomize_zero_init=False)
    modules = [m for n, m in net.denoising_unet.named_modules() if n.endswith("temporal_transformer")]
    assert modules
    calls = []
    for m in modules:
        m.proj_in.register_forward_hook(lambda *a: calls.append(1))
    for p in net.parameters():
        p.requires_grad_(True)
    computed = _run(net, x)
    assert calls  # trainable: computed
    for m in modules:
        m.requires_grad_(False)
    calls.clear()
    skipped = _run(net, x)
    assert not calls and torch.equal(computed, skipped)
    with torch.no_grad():
        modules[0].proj_out.weight[0, 0] = 0.5  # in place, as an optimizer step
    _run(net, x)
    assert len(calls) == 1  # only the changed module runs again
