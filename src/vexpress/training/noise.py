"""Forward diffusion for training (spec §4.1): noise with offset, timesteps, noisy latents, targets and SNR.

The schedule itself is a diffusers scheduler chosen by config (``conf/noise_scheduler/*.yaml``); the official one is
``scaled_linear`` betas 0.00085..0.012 over 1000 steps, rescaled to zero terminal SNR, trailing spacing,
v-prediction. Every random draw takes an explicit ``torch.Generator`` so that a step's noise is a pure function of
the run seed and the step (resumed runs reproduce uninterrupted ones).
"""

from __future__ import annotations

from typing import Any

import torch

from vexpress.errors import InputError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class DiffusionTargets:
    """Training-time view of a diffusers noise scheduler.

    Args:
        scheduler: any diffusers scheduler with ``alphas_cumprod``, ``config.num_train_timesteps`` and
            ``config.prediction_type`` (``DDPMScheduler``/``DDIMScheduler``).
    """

    def __init__(self, scheduler: Any):
        self.scheduler = scheduler
        cfg = scheduler.config
        self.num_train_timesteps = int(cfg.num_train_timesteps)
        self.prediction_type = str(cfg.prediction_type)
        if self.prediction_type not in PREDICTION_TYPES:
            raise InputError(f"noise scheduler prediction_type {self.prediction_type!r} is not one of "
                             f"{PREDICTION_TYPES}")
        self.alphas_cumprod = scheduler.alphas_cumprod.detach().to(torch.float64).clone()

    @property
    def v_prediction(self) -> bool:
        return self.prediction_type == "v_prediction"

    def sample_timesteps(self, batch: int, generator: torch.Generator, device: torch.device | str,
                         weights: torch.Tensor | None = None) -> torch.Tensor:
        """One timestep per clip: uniform over ``0..T-1`` (official), or drawn with relative probabilities
        ``weights`` (T,) (:meth:`vexpress.training.schedules.TimestepBias.weights`)."""
        if weights is None:
            return torch.randint(0, self.num_train_timesteps, (batch,), generator=generator).to(device)
        if weights.shape != (self.num_train_timesteps,):
            raise InputError(f"timestep weights must have shape ({self.num_train_timesteps},), got "
                             f"{tuple(weights.shape)}")
        return torch.multinomial(weights.double().cpu(), batch, replacement=True, generator=generator).to(device)

    @staticmethod
    def sample_noise(latents: torch.Tensor, offset: float, generator: torch.Generator) -> torch.Tensor:
        """Gaussian noise plus ``offset`` x one Gaussian per (clip, channel), constant over frames and space."""
        noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device, latents.dtype)
        if offset > 0:
            shift = torch.randn((latents.shape[0], latents.shape[1]) + (1,) * (latents.ndim - 2), generator=generator)
            noise = noise + offset * shift.to(latents.device, latents.dtype)
        return noise

    def _coef(self, t: torch.Tensor, ndim: int, device: torch.device, dtype: torch.dtype):
        a = self.alphas_cumprod.to(device)[t.long()]
        shape = (-1,) + (1,) * (ndim - 1)
        return a.sqrt().to(dtype).view(shape), (1 - a).sqrt().to(dtype).view(shape)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sa, s1 = self._coef(t, latents.ndim, latents.device, latents.dtype)
        return sa * latents + s1 * noise

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network is trained to predict: v = sqrt(a) eps - sqrt(1-a) x0, or eps, or x0."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return latents
        sa, s1 = self._coef(t, latents.ndim, latents.device, latents.dtype)
        return sa * noise - s1 * latents

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar / (1 - alpha_bar) per timestep (0 at the zero-SNR terminal step), float32."""
        a = self.alphas_cumprod.to(t.device)[t.long()]
        return (a / (1 - a).clamp_min(1e-20)).float()
