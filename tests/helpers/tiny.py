"""Tiny REAL components for tests (the real classes at small sizes, seeded)."""

from __future__ import annotations

import torch

from vexpress.models import VExpressConfig, VExpressNet


def tiny_config(audio_dim: int = 16, latent_downscale: int = 8) -> VExpressConfig:
    return VExpressConfig.tiny(audio_embedding_dim=audio_dim, latent_downscale=latent_downscale)


def tiny_net(seed: int = 0, audio_dim: int = 16, latent_downscale: int = 8,
             randomize_zero_init: bool = True) -> VExpressNet:
    """A tiny VExpressNet. With ``randomize_zero_init`` the official zero-initialised output layers (audio
    attention, motion ``proj_out``, guider ``conv_out``) get random values so every path influences the output."""
    torch.manual_seed(seed)
    net = VExpressNet(tiny_config(audio_dim, latent_downscale))
    if randomize_zero_init:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if p.abs().sum() == 0 and ("to_out" in name or "proj_out" in name or "conv_out" in name):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net.eval()


def tiny_vae(seed: int = 0, latent_downscale: int = 8):
    """A tiny diffusers AutoencoderKL with 4 latent channels and the given downscale (2 ** (blocks - 1))."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    blocks = {8: 4, 4: 3, 2: 2}[latent_downscale]
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=[8, 16, 16, 16][:blocks],
        down_block_types=["DownEncoderBlock2D"] * blocks, up_block_types=["UpDecoderBlock2D"] * blocks,
    ).eval()


def tiny_inputs(batch: int = 2, frames: int = 4, size: int = 64, audio_dim: int = 16, latent_downscale: int = 8,
                seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h = size // latent_downscale
    return {
        "noisy_latents": torch.randn(batch, 4, frames, h, h, generator=g),
        "timesteps": torch.randint(0, 1000, (batch,), generator=g),
        "ref_latents": torch.randn(batch, 4, h, h, generator=g),
        "audio_windows": torch.randn(batch, frames, 10, audio_dim, generator=g),
        "kps_images": torch.rand(batch, 3, frames, size, size, generator=g),
    }


def random_demo_foundation(path) -> None:
    """A foundation folder of random weights for the demo's tiny model: network, VAE and a (small, random)
    phonetic audio encoder, as the demo needs all three. The shipped one is checked in tests/demo/test_foundation.py."""
    import tempfile
    from pathlib import Path

    from vexpress.audio.phonetic import PhoneticNet, save_phonetic_encoder
    from vexpress.models.weights import save_foundation
    from vexpress.training.vae import tiny_vae as demo_vae

    torch.manual_seed(0)
    net = VExpressNet(VExpressConfig.tiny(audio_embedding_dim=80, latent_downscale=4))
    with tempfile.TemporaryDirectory() as tmp:
        encoder = save_phonetic_encoder(Path(tmp) / "enc", PhoneticNet(hidden=16, dim=80, kernel=3, layers=1),
                                        {"n_mels": 80, "rate_hz": 50.0}, {})
        save_foundation(path, net, demo_vae(4, 0), {"command": "test"}, audio_encoder=encoder)
