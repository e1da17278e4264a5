"""The LitModule's training step on a tiny batch: images through the VAE or cached latents, drops applied."""

from __future__ import annotations

import pytest
import torch

from tests.training import random_batches as fakes
from tests.training.helpers import lit_module
from vexpress.errors import InputError
from vexpress.models.conditioning import DropMask
from vexpress.training.vae import tiny_vae


def test_step_with_cached_latents_is_deterministic_per_draw():
    m = lit_module()
    b = fakes.batch(num_frames=2)
    for _ in range(2):
        m.train_generator()
    assert m.train_draws == 2
    from vexpress.training.rng import generator_for

    l1 = m.diffusion_step(b, generator_for(0, "train", 0, 0)).loss
    l2 = m.diffusion_step(b, generator_for(0, "train", 0, 0)).loss
    assert torch.equal(l1, l2) and torch.isfinite(l1)
    l1.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.net.parameters())


def test_step_with_images_uses_the_vae_and_drops():
    m = lit_module(vae=tiny_vae(4, 0))
    b = fakes.batch(num_frames=2, latents=False)
    x = m.prepare(b, torch.Generator().manual_seed(0))
    assert x["latents"].shape == (2, 4, 2, 8, 8) and x["ref_latents"].shape == (2, 4, 8, 8)
    out = m.diffusion_step(b, torch.Generator().manual_seed(0), DropMask.all(2))
    assert torch.isfinite(out.loss) and out.lip_mse is not None


def test_images_without_vae_is_a_user_error():
    m = lit_module()
    with pytest.raises(InputError):
        m.prepare(fakes.batch(num_frames=1, latents=False), None)


def test_vae_scale_mismatch_is_refused():
    vae = tiny_vae(4, 0)
    vae.register_to_config(scaling_factor=0.5)
    with pytest.raises(InputError):
        lit_module(vae=vae)


def test_checkpoint_hooks_drop_frozen_helpers_and_keep_the_stream():
    m = lit_module(vae=tiny_vae(4, 0))
    m.train_draws = 7
    ckpt = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(ckpt)
    assert not any(k.startswith("vae.") for k in ckpt["state_dict"]) and ckpt["vexpress"]["train_draws"] == 7
    m2 = lit_module(vae=tiny_vae(4, 0))
    m2.on_load_checkpoint(ckpt)
    assert m2.train_draws == 7 and any(k.startswith("vae.") for k in ckpt["state_dict"])
    m2.load_state_dict(ckpt["state_dict"])


def test_check_data_names_the_setting_to_change():
    """The data's latent downscale and frame size against the network and its VAE (one line each)."""
    from tests.training.random_batches import DOWNSCALE

    m = lit_module(vae=tiny_vae(latent_downscale=DOWNSCALE))
    m.check_data(image_size=16 * DOWNSCALE, latent_downscale=DOWNSCALE)  # fits: no error
    m.check_data(image_size=None, latent_downscale=None)
    other = 8 if DOWNSCALE != 8 else 4
    with pytest.raises(InputError, match=rf"data.latent_downscale={other} \(data=prepared\) does not match "
                                         rf"model=tiny.*set data.latent_downscale={DOWNSCALE}"):
        m.check_data(image_size=512, latent_downscale=other, data_name="prepared", model_name="tiny")
    with pytest.raises(InputError, match=rf"data.image_size={16 * DOWNSCALE + 1} .*multiple of {DOWNSCALE}"):
        m.check_data(image_size=16 * DOWNSCALE + 1, latent_downscale=DOWNSCALE)
    mismatched = lit_module(vae=tiny_vae(latent_downscale=other))
    with pytest.raises(InputError, match=rf"the VAE makes latents 1/{other} of the image"):
        mismatched.check_data(image_size=64, latent_downscale=DOWNSCALE)
