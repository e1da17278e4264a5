"""Condition-influence probe: how much does the prediction depend on each condition?

On a fixed batch, fixed noise and fixed timesteps the network predicts once with every condition and once with each
condition dropped alone (the official unconditional path for that condition). The influence of condition ``c`` is

    influence_c = || pred_all - pred_without_c || / || pred_all ||

(RMS over every latent element of the batch), and ``<c>_lip`` is the same restricted to the lip mask when the batch
has one. The paper's thesis in one curve: the reference and keypoints dominate early, and audio influence should
rise through the stages (it is exactly 0 while the audio attention's output projection is zero, in stage 1).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from vexpress.training.dropout import CONDITIONS


@torch.no_grad()
def condition_influence(
    net: torch.nn.Module,
    noisy: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    ref_latents: torch.Tensor,
    audio_windows: torch.Tensor,
    kps_images: torch.Tensor,
    lip_masks: torch.Tensor | None = None,
    audio_tokens: torch.Tensor | None = None,
) -> dict[str, float]:
    """Relative change of the prediction when each condition alone is dropped (see the module docstring).
    ``audio_tokens``, when given, are what the cross-attention hears instead of the projected audio windows (a
    captioned model's caption tokens)."""
    from vexpress.models.conditioning import DropMask

    b = noisy.shape[0]
    dev = noisy.device
    none = DropMask.none(b, dev)
    kw = dict(ref_latents=ref_latents, audio_windows=audio_windows, kps_images=kps_images, audio_tokens=audio_tokens)
    full = net(noisy, timesteps, drop=none, **kw).float()
    scale = full.pow(2).mean().sqrt().clamp_min(1e-12)
    out: dict[str, float] = {}
    mask = None
    if lip_masks is not None:
        mask = lip_masks.float().to(dev).expand(-1, full.shape[1], -1, -1, -1)
    for cond in CONDITIONS:
        flags = {c: torch.full((b,), c == cond, dtype=torch.bool, device=dev) for c in CONDITIONS}
        pred = net(noisy, timesteps, drop=DropMask(**flags), **kw).float()
        diff = (full - pred).pow(2)
        out[cond] = float(diff.mean().sqrt() / scale)
        if mask is not None and mask.sum() > 0:
            lip_scale = ((full.pow(2) * mask).sum() / mask.sum()).sqrt().clamp_min(1e-12)
            out[f"{cond}_lip"] = float(((diff * mask).sum() / mask.sum()).sqrt() / lip_scale)
    return out


def summarise(values: list[Mapping[str, float]]) -> dict[str, float]:
    """Mean over several probe calls (e.g. several timesteps)."""
    keys = sorted({k for v in values for k in v})
    return {k: float(sum(v[k] for v in values if k in v) / max(1, sum(1 for v in values if k in v))) for k in keys}


@torch.no_grad()
def influence_on_batch(
    net: torch.nn.Module,
    targets: Any,
    latents: torch.Tensor,
    *,
    ref_latents: torch.Tensor,
    audio_windows: torch.Tensor,
    kps_images: torch.Tensor,
    lip_masks: torch.Tensor | None = None,
    timesteps: Sequence[int] = (250, 500, 750),
    seed: int = 1234,
    audio_tokens: torch.Tensor | None = None,
) -> dict[str, float]:
    """:func:`condition_influence` averaged over ``timesteps``, with noise fixed by ``(seed, t)``.

    ``targets``: a :class:`~vexpress.training.noise.DiffusionTargets` (the forward process).
    """
    from vexpress.training.rng import generator_for

    results = []
    for t in timesteps:
        g = generator_for(seed, "probe", int(t))
        noise = torch.randn(latents.shape, generator=g).to(latents.device, latents.dtype)
        tt = torch.full((latents.shape[0],), int(t), dtype=torch.long, device=latents.device)
        noisy = targets.add_noise(latents, noise, tt)
        results.append(condition_influence(net, noisy, tt, ref_latents=ref_latents, audio_windows=audio_windows,
                                           kps_images=kps_images, lip_masks=lip_masks, audio_tokens=audio_tokens))
    return summarise(results)
