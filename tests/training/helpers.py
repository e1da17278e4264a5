"""Builders of the real training components at tiny sizes."""

from __future__ import annotations

import functools

from tests.helpers.tiny import tiny_net
from tests.training.random_batches import AUDIO_DIM, DOWNSCALE
from vexpress.models.vexpress_net import VExpressNet
from vexpress.training.lit_module import VExpressLitModule
from vexpress.training.optim import adamw, constant_with_warmup


def scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         steps_offset=1, clip_sample=False, rescale_betas_zero_snr=True, timestep_spacing="trailing",
                         prediction_type="v_prediction")


def tiny_network(seed: int = 0) -> VExpressNet:
    """:func:`tests.helpers.tiny.tiny_net` at the sizes of the training batches, zero-initialised layers kept (as
    in training), in training mode."""
    return tiny_net(seed, AUDIO_DIM, DOWNSCALE, randomize_zero_init=False).train()


def lit_module(seed: int = 0, lr: float = 1e-3, vae=None, **kw) -> VExpressLitModule:
    return VExpressLitModule(
        net=tiny_network(seed), noise_scheduler=scheduler(),
        optimizer=functools.partial(adamw, lr=lr), lr_scheduler=functools.partial(constant_with_warmup, warmup_steps=1),
        vae=vae, seed=seed, **kw,
    )
