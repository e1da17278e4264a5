"""The training loss of V-Express (spec §4.1, steps 6-8), as pure functions.

``loss = mean_b( w_snr(t_b) * mean_{c,f,h,w}( lip_w * (pred - target)^2 ) )`` with

- ``lip_w = (lip_loss_weight - 1) * lip_mask + 1`` (1 everywhere when the weight is 1, as in the released configs);
- ``w_snr = min(snr', gamma) / snr'`` where ``snr' = snr + 1`` for v-prediction and ``snr`` otherwise (min-SNR-gamma,
  Hang et al. 2023; gamma = 5 officially; gamma = 0 turns the weighting off).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vexpress.errors import ShapeError


def min_snr_weights(snr: torch.Tensor, gamma: float, v_prediction: bool) -> torch.Tensor:
    """Per-sample min-SNR-gamma weights (B,); all ones when ``gamma`` is 0."""
    if gamma <= 0:
        return torch.ones_like(snr)
    s = snr + 1 if v_prediction else snr
    return torch.minimum(s, torch.full_like(s, float(gamma))) / s.clamp_min(1e-12)


def lip_weight_map(lip_masks: torch.Tensor, weight: float) -> torch.Tensor:
    """(B, 1, F, h, w) mask in [0, 1] -> per-pixel loss weight ``(weight - 1) * mask + 1``."""
    return (float(weight) - 1.0) * lip_masks + 1.0


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, what backward sees
    mse: torch.Tensor  # scalar, unweighted MSE (for logging)
    lip_mse: torch.Tensor | None  # scalar, unweighted MSE inside the lip mask (for logging)
    snr_weights: torch.Tensor  # (B,)
    caption_distill: torch.Tensor | None = None  # scalar, the caption-distillation term before its weight (logging)


def diffusion_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    snr: torch.Tensor,
    *,
    snr_gamma: float = 5.0,
    v_prediction: bool = True,
    lip_masks: torch.Tensor | None = None,
    lip_loss_weight: float = 1.0,
) -> LossOutput:
    """Weighted MSE of a (B, C, F, h, w) prediction, in float32 whatever the autocast dtype."""
    if pred.shape != target.shape:
        raise ShapeError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    err = (pred.float() - target.float()) ** 2
    lip_mse = None
    weighted = err
    if lip_masks is not None:
        m = lip_masks.float()
        if m.ndim != err.ndim or m.shape[0] != err.shape[0] or m.shape[2:] != err.shape[2:]:
            raise ShapeError(f"lip masks {tuple(m.shape)} must be (B, 1, F, h, w) matching {tuple(err.shape)}")
        if float(lip_loss_weight) != 1.0:
            weighted = err * lip_weight_map(m, lip_loss_weight)
        denom = (m.sum() * err.shape[1]).clamp_min(1e-8)
        lip_mse = (err * m).sum() / denom
    per_sample = weighted.mean(dim=tuple(range(1, err.ndim)))
    w = min_snr_weights(snr.float().to(per_sample.device), snr_gamma, v_prediction)
    return LossOutput((per_sample * w).mean(), err.mean().detach(),
                      None if lip_mse is None else lip_mse.detach(), w.detach())
