"""Builders of the real training components at tiny sizes."""

from __future__ import annotations

import functools

from vexpress.models.config import VExpressConfig
from vexpress.models.vexpress_net import VExpressNet
from vexpress.training.lit_module import VExpressLitModule
from vexpress.training.optim import adamw, constant_with_warmup

from tests.training.random_batches import AUDIO_DIM, DOWNSCALE


def scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         steps_offset=1, clip_sample=False, rescale_betas_zero_snr=True, timestep_spacing="trailing",
                         prediction_type="v_prediction")


def tiny_network(seed: int = 0) -> VExpressNet:
    import torch

    torch.manual_seed(seed)
    return VExpressNet(VExpressConfig.tiny(audio_embedding_dim=AUDIO_DIM, latent_downscale=DOWNSCALE))


def lit_module(seed: int = 0, lr: float = 1e-3, vae=None, **kw) -> VExpressLitModule:
    return VExpressLitModule(
        net=tiny_network(seed), noise_scheduler=scheduler(),
        optimizer=functools.partial(adamw, lr=lr), lr_scheduler=functools.partial(constant_with_warmup, warmup_steps=1),
        vae=vae, seed=seed, **kw,
    )
