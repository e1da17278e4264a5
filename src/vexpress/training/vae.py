"""VAEs for training: the official one from a local folder, or a tiny real ``diffusers.AutoencoderKL`` fitted on the
synthetic benchmark (the embedded default has no downloadable weights).

The tiny VAE is an ordinary ``AutoencoderKL`` (4 latent channels, downscale 4 or 8), trained with an L1 + L2
reconstruction loss (optionally weighted up inside given masks, e.g. the mouth) and a small KL term. After fitting,
its latent scale is *standardised*: the encoder's mean head and the decoder's input are rescaled so that
``latent x 0.18215`` has unit standard deviation on the training frames. The network config's ``vae_scaling_factor``
(0.18215) is therefore right for every VAE the package uses.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from vexpress.errors import WeightsError
from vexpress.utils.io import atomic_dir

log = logging.getLogger(__name__)

SD_SCALING_FACTOR = 0.18215


def tiny_vae_config(latent_downscale: int = 4, width: int = 8, attention: bool = False,
                    groups: int = 2) -> dict[str, Any]:
    """Config of the tiny AutoencoderKL: ``log2(latent_downscale) + 1`` blocks of ``width, 2*width, 4*width, ...``
    channels (capped at ``4*width``); ``attention``: keep the mid-block self-attention of the SD VAE."""
    blocks = {8: 4, 4: 3, 2: 2}.get(int(latent_downscale))
    if blocks is None:
        raise ValueError(f"latent_downscale must be 2, 4 or 8, got {latent_downscale}")
    widths = [width * min(2 ** i, 4) for i in range(blocks)]
    return dict(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=groups,
        block_out_channels=widths, down_block_types=["DownEncoderBlock2D"] * blocks,
        up_block_types=["UpDecoderBlock2D"] * blocks, scaling_factor=SD_SCALING_FACTOR,
        mid_block_add_attention=bool(attention),
    )


def tiny_vae(latent_downscale: int = 4, seed: int = 0, width: int = 8, attention: bool = False, groups: int = 2):
    """A randomly initialised tiny ``AutoencoderKL`` (real class, small sizes), frozen and in eval mode."""
    from diffusers import AutoencoderKL

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        vae = AutoencoderKL(**tiny_vae_config(latent_downscale, width, attention, groups))
    finally:
        torch.random.set_rng_state(state)
    return vae.eval().requires_grad_(False)


def no_vae() -> None:
    """For configs whose data module delivers cached latents."""
    return None


def load_vae(path: str | os.PathLike):
    """``AutoencoderKL.from_pretrained`` of a local folder (never a hub id), frozen and in eval mode."""
    from diffusers import AutoencoderKL

    path = Path(path)
    if not (path / "config.json").is_file():
        raise WeightsError(f"no VAE at {path} (expected a diffusers AutoencoderKL folder with config.json); "
                           "run vexpress-demo once to fit the tiny VAE, or point the config to sd-vae-ft-mse")
    vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True, low_cpu_mem_usage=False)
    return vae.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------
def _posterior(vae, x: torch.Tensor):
    return vae.encode(x).latent_dist


def fit_vae(
    vae,
    frames: torch.Tensor,
    steps: int = 600,
    batch_size: int = 32,
    lr: float = 2e-3,
    kl_weight: float = 1e-5,
    crop: int | None = None,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
    weights: torch.Tensor | None = None,
) -> dict[str, float]:
    """Train ``vae`` in place on ``frames`` (N, 3, H, W) in [-1, 1]; returns the final reconstruction errors.

    ``weights``: optional (N, 1, H, W) per-pixel weights of the reconstruction loss (e.g. the mouth region).

    ``crop``: train on random ``crop x crop`` patches (4x cheaper at 64 px frames, but GroupNorm and the mid-block
    attention then see other statistics than at inference: colours drift; full frames are the default).
    """
    g = torch.Generator().manual_seed(seed)
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(2, steps), pct_start=0.1)
    n = frames.shape[0]
    loss_val = float("nan")
    for step in range(steps):
        idx = torch.randint(0, n, (min(batch_size, n),), generator=g)
        x = frames[idx]
        w = weights[idx] if weights is not None else None
        if crop and crop < x.shape[-1]:
            oy, ox = (int(v) for v in torch.randint(0, x.shape[-1] - crop + 1, (2,), generator=g))
            x = x[..., oy:oy + crop, ox:ox + crop]
            w = w[..., oy:oy + crop, ox:ox + crop] if w is not None else None
        dist = _posterior(vae, x)
        eps = torch.randn(dist.mean.shape, generator=g)
        z = dist.mean + dist.std * eps
        rec = vae.decode(z).sample
        loss = _reconstruction_loss(rec, x, w) + kl_weight * dist.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_val = float(loss.detach())
        if progress is not None:
            progress(step, loss_val)
    vae.eval().requires_grad_(False)
    return {"final_loss": loss_val, **reconstruction_error(vae, frames[: min(n, 256)])}


def region_weights(masks: torch.Tensor, weight: float) -> torch.Tensor | None:
    """Per-pixel loss weights: ``weight`` inside ``masks`` (N, 1, H, W in [0, 1], e.g. the mouth boxes), 1 elsewhere;
    None when ``weight`` is 1 (an unweighted loss)."""
    return None if float(weight) == 1.0 else 1.0 + (float(weight) - 1.0) * masks


def _reconstruction_loss(rec: torch.Tensor, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """L1 + L2 per pixel, optionally weighted (the mouth boxes), averaged."""
    err = (rec - x).abs() + (rec - x) ** 2
    return (err * w if w is not None else err).mean()


def finetune_decoder(
    vae,
    frames: torch.Tensor,
    steps: int,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    weights: torch.Tensor | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train the decoder half of ``vae`` (``post_quant_conv`` and ``decoder``) in place on ``frames`` (N, 3, H, W)
    in [-1, 1], the encoder frozen: what Stability did to make sd-vae-ft-mse from SD's VAE. The latents (and so
    every network trained on them) stay valid, and the decoded images improve.

    Each step decodes a sample of the frames' posteriors (computed once, the encoder being fixed) with the same
    reconstruction loss as :func:`fit_vae` (``weights``: optional (N, 1, H, W) per-pixel weights); one-cycle
    schedule with 5 % warm-up. Returns ``{"final_loss", "loss_curve" (mean per 100 steps), "mae", "psnr"}``.
    """
    g = torch.Generator().manual_seed(seed)
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        posts = [_posterior(vae, x) for x in frames.split(256)]
        mean, std = torch.cat([p.mean for p in posts]), torch.cat([p.std for p in posts])
    params = [*vae.post_quant_conv.parameters(), *vae.decoder.parameters()]
    for p in params:
        p.requires_grad_(True)
    vae.decoder.train()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(2, steps), pct_start=0.05)
    n = frames.shape[0]
    losses: list[float] = []
    try:
        for step in range(steps):
            idx = torch.randint(0, n, (min(batch_size, n),), generator=g)
            z = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)
            loss = _reconstruction_loss(vae.decode(z).sample, frames[idx],
                                        weights[idx] if weights is not None else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step, losses[-1])
    finally:
        vae.eval().requires_grad_(False)
    curve = [{"step": i + min(100, len(losses) - i), "loss": sum(losses[i:i + 100]) / len(losses[i:i + 100])}
             for i in range(0, len(losses), 100)]
    return {"final_loss": losses[-1] if losses else float("nan"), "loss_curve": curve,
            **reconstruction_error(vae, frames[: min(n, 256)])}


@torch.no_grad()
def reconstruction_error(vae, frames: torch.Tensor) -> dict[str, float]:
    """Mean absolute error and PSNR (on [0, 1] images) of encode-mean -> decode."""
    rec = torch.cat([vae.decode(_posterior(vae, x).mean).sample for x in frames.split(64)])
    mae = float((rec - frames).abs().mean()) / 2
    mse = float(((rec.clamp(-1, 1) - frames) ** 2).mean()) / 4
    return {"mae": mae, "psnr": 10 * math.log10(1.0 / max(mse, 1e-12))}


@torch.no_grad()
def standardise_latent_scale(vae, frames: torch.Tensor, target: float = SD_SCALING_FACTOR) -> float:
    """Rescale the latent space so that ``target x latent`` has unit std on ``frames``; returns the factor used.

    The encoder's mean channels (``quant_conv`` output 0..3) are multiplied by ``k``, the log-variance channels get
    ``+2 ln k`` (the posterior scales with the mean), and ``post_quant_conv``'s input weights are divided by ``k``,
    so decoding is unchanged. Works for any AutoencoderKL with quant convs (the default).
    """
    means = torch.cat([_posterior(vae, x).mean for x in frames.split(64)])
    std = float(means.std())
    k = 1.0 / (target * max(std, 1e-8))
    qc, pqc = vae.quant_conv, vae.post_quant_conv
    if qc is None or pqc is None:
        raise ValueError("standardise_latent_scale needs an AutoencoderKL with quant_conv/post_quant_conv")
    c = vae.config.latent_channels
    qc.weight[:c] *= k
    qc.bias[:c] *= k
    qc.bias[c:] += 2 * math.log(k)
    pqc.weight /= k
    vae.register_to_config(scaling_factor=target)
    return k


def _fingerprint(meta: Mapping[str, Any]) -> str:
    return hashlib.sha1(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_or_fit_tiny_vae(
    directory: str | os.PathLike,
    frames_fn: Callable[[], torch.Tensor],
    data_id: str,
    latent_downscale: int = 4,
    width: int = 8,
    attention: bool = False,
    steps: int = 600,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    crop: int | None = None,
    mouth_weight: float = 1.0,
    progress: Callable[[int, int, float], None] | None = None,
    weights_fn: Callable[[], torch.Tensor] | None = None,
):
    """Load the cached tiny VAE at ``directory`` if it was fitted with these settings on ``data_id``, else fit it.

    The folder is a diffusers ``save_pretrained`` folder plus ``fit.json`` (settings and reconstruction errors),
    written atomically. ``mouth_weight`` > 1 weights the reconstruction loss inside ``weights_fn()`` (N, 1, H, W)
    masks (the mouth boxes): a 64 px mouth is a few pixels, and its opening is what the benchmark measures.
    Returns ``(vae, info)``.
    """
    directory = Path(directory)
    meta = {"data_id": data_id, "latent_downscale": latent_downscale, "width": width, "attention": attention,
            "mouth_weight": mouth_weight, "steps": steps,
            "batch_size": batch_size, "lr": lr, "seed": seed, "crop": crop, "version": 1}
    key = _fingerprint(meta)
    info_path = directory / "fit.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("key") == key:
            return load_vae(directory), info
    frames = frames_fn()
    weights = None
    if mouth_weight != 1.0:
        if weights_fn is None:
            raise ValueError("mouth_weight needs weights_fn (the mouth masks of the frames)")
        weights = region_weights(weights_fn(), mouth_weight)
    torch.manual_seed(seed)
    vae = tiny_vae(latent_downscale, seed, width, attention)
    t0 = time.perf_counter()
    stats = fit_vae(vae, frames, steps=steps, batch_size=batch_size, lr=lr, seed=seed, crop=crop, weights=weights,
                    progress=(lambda s, loss: progress(s, steps, loss)) if progress else None)
    k = standardise_latent_scale(vae, frames[:: max(1, frames.shape[0] // 1024)])
    info = {"key": key, **meta, **stats, "latent_rescale": k, "frames": int(frames.shape[0]),
            "seconds": time.perf_counter() - t0}
    with atomic_dir(directory) as tmp:
        vae.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "fit.json").write_text(json.dumps(info, indent=2) + "\n")
    return vae, info
