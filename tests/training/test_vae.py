"""The tiny VAE's training helpers on a real (tiny) ``AutoencoderKL``: a decoder fine-tune leaves the encoder, and so
the latents, bit for bit as they were, and decodes better; the encoder digest sees encoder changes only."""

from __future__ import annotations

import torch

from vexpress.models.weights import vae_encoder_digest, vae_encoder_tensors
from vexpress.training.vae import finetune_decoder, reconstruction_error, tiny_vae


def _frames(n: int = 24, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Flat-coloured squares on a gradient: simple images a tiny VAE can learn in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(-1, 1, size)[:, None].expand(size, size)
    out = []
    for _ in range(n):
        img = torch.stack([y * float(torch.rand(1, generator=g)) for _ in range(3)])
        x0, y0 = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
        img[:, y0:y0 + size // 2, x0:x0 + size // 2] = torch.rand(3, 1, 1, generator=g) * 2 - 1
        out.append(img)
    return torch.stack(out).clamp(-1, 1)


def test_decoder_fine_tune_keeps_the_latents_and_improves_the_reconstruction():
    vae = tiny_vae(4, seed=0, width=8)
    frames = _frames()
    before = reconstruction_error(vae, frames)
    encoder = {k: v.clone() for k, v in vae_encoder_tensors(vae).items()}
    digest = vae_encoder_digest(vae)
    with torch.no_grad():
        latents = vae.encode(frames).latent_dist.mean
    decoder = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    losses = []
    fit = finetune_decoder(vae, frames, steps=60, batch_size=8, lr=3e-3, seed=0,
                           progress=lambda step, loss: losses.append(loss))
    assert len(losses) == 60 and fit["loss_curve"][-1]["step"] == 60
    after = reconstruction_error(vae, frames)
    assert after["psnr"] > before["psnr"] + 1.0 and fit["psnr"] == after["psnr"]
    for k, v in vae_encoder_tensors(vae).items():  # the encoder did not move ...
        assert torch.equal(v, encoder[k]), k
    assert vae_encoder_digest(vae) == digest
    with torch.no_grad():  # ... so the latents are the same, bit for bit
        assert torch.equal(vae.encode(frames).latent_dist.mean, latents)
    assert any(not torch.equal(v, decoder[k]) for k, v in vae.decoder.state_dict().items())  # the decoder did
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())  # frozen again


def test_encoder_digest_changes_with_the_encoder_only():
    vae = tiny_vae(4, seed=0, width=8)
    digest = vae_encoder_digest(vae)
    with torch.no_grad():
        vae.decoder.conv_out.bias += 0.1
        vae.post_quant_conv.weight.mul_(1.1)
    assert vae_encoder_digest(vae) == digest
    with torch.no_grad():
        vae.quant_conv.bias[0] += 1e-3
    assert vae_encoder_digest(vae) != digest
    assert vae_encoder_digest(tiny_vae(4, seed=1, width=8)) != digest
