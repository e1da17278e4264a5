"""Sampling schedulers: the official DDIM setting and two faster diffusers solvers with the same noise schedule.

All three share the training noise schedule of V-Express (spec §4.1, ``inference_v2.yaml``): 1000 steps,
``scaled_linear`` betas 0.00085..0.012, zero terminal SNR (``rescale_betas_zero_snr``), ``trailing`` timestep
spacing, v-prediction, ``steps_offset=1``.

============  =================================  ============================================================
name          diffusers class                    notes
============  =================================  ============================================================
``ddim``      ``DDIMScheduler``                  official (25 steps, eta 0, ``clip_sample=False``)
``dpmpp``     ``DPMSolverMultistepScheduler``    DPM-Solver++ (2nd order, multistep); good at 10-15 steps
``unipc``     ``UniPCMultistepScheduler``        UniPC (2nd order, bh2); good at 8-12 steps
``lcm``       ``LCMScheduler`` (seeded subclass)  for a consistency-distilled student only (``stage=distill``);
                                                 1-8 steps, guidance off by default
============  =================================  ============================================================

``lcm``: diffusers picks its timesteps from the distillation grid ``(1..N) * (1000 / N) - 1`` with
``N = original_inference_steps`` (50: 999, 979, ..., 19, the same trailing grid the student was distilled on, so
``timestep_spacing`` plays no part); one step evaluates the student at t = 999, where alpha_bar = 0 under zero
terminal SNR and the v-prediction's clean estimate is ``-v``. ``timestep_scaling`` (10) must match the
distillation's. Between steps LCM re-noises its estimate; that noise comes from the scheduler's own generator,
seeded with ``noise_seed`` at every ``set_timesteps`` (or :meth:`manual_seed`), so a video is reproducible.

Multistep solvers keep a history of model outputs, so the pipeline steps the whole video once per timestep (never
window by window); for DDIM this is numerically the same as the official per-window stepping.
"""

from __future__ import annotations

from typing import Any

#: The noise schedule V-Express was trained with (shared by every sampler).
NOISE_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "steps_offset": 1,
}

SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": True}),
    "dpmpp": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                              "lower_order_final": True, "final_sigmas_type": "zero"}),
    "unipc": ("UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh2", "predict_x0": True,
                                          "lower_order_final": True}),
    "lcm": ("LCMScheduler", {"original_inference_steps": 50, "timestep_scaling": 10.0, "clip_sample": False,
                             "set_alpha_to_one": True}),
}

#: Default number of steps per sampler (what ``num_inference_steps=null`` means).
DEFAULT_STEPS = {"ddim": 25, "dpmpp": 12, "unipc": 10, "lcm": 4}

#: Default classifier-free guidance per sampler (what ``guidance_scale=null`` means): the official 3.5, and off (one
#: branch) for ``lcm``, whose student has the teacher's guidance distilled in.
DEFAULT_GUIDANCE = {"ddim": 3.5, "dpmpp": 3.5, "unipc": 3.5, "lcm": 1.0}


def default_guidance(sampler: str) -> float:
    """The guidance scale a sampler uses when none is given (3.5 unless the sampler says otherwise)."""
    return DEFAULT_GUIDANCE.get(str(sampler).lower(), 3.5)


_LCM_CLASS = None


def lcm_scheduler_class():
    """``LCMScheduler`` whose re-noising between steps draws from its own generator (seeded by ``noise_seed`` at every
    ``set_timesteps``, or by :meth:`manual_seed`) instead of the global torch stream."""
    global _LCM_CLASS
    if _LCM_CLASS is not None:
        return _LCM_CLASS
    import torch
    from diffusers import LCMScheduler
    from diffusers.configuration_utils import register_to_config

    class SeededLCMScheduler(LCMScheduler):
        @register_to_config
        def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                     beta_schedule: str = "scaled_linear", trained_betas: Any = None,
                     original_inference_steps: int = 50, clip_sample: bool = False, clip_sample_range: float = 1.0,
                     set_alpha_to_one: bool = True, steps_offset: int = 0, prediction_type: str = "epsilon",
                     thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
                     sample_max_value: float = 1.0, timestep_spacing: str = "leading", timestep_scaling: float = 10.0,
                     rescale_betas_zero_snr: bool = False, noise_seed: int = 0):
            super().__init__(
                num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                beta_schedule=beta_schedule, trained_betas=trained_betas,
                original_inference_steps=original_inference_steps, clip_sample=clip_sample,
                clip_sample_range=clip_sample_range, set_alpha_to_one=set_alpha_to_one, steps_offset=steps_offset,
                prediction_type=prediction_type, thresholding=thresholding,
                dynamic_thresholding_ratio=dynamic_thresholding_ratio, sample_max_value=sample_max_value,
                timestep_spacing=timestep_spacing, timestep_scaling=timestep_scaling,
                rescale_betas_zero_snr=rescale_betas_zero_snr)
            self._noise_generator = torch.Generator().manual_seed(int(noise_seed))

        def manual_seed(self, seed: int) -> None:
            """Seed the re-noising stream (the next ``set_timesteps`` keeps this seed)."""
            defaults = [k for k in self.config.get("_use_default_values", []) if k != "noise_seed"]
            self.register_to_config(noise_seed=int(seed), _use_default_values=defaults)  # kept by from_config
            self._noise_generator = torch.Generator().manual_seed(int(seed))

        def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
            super().set_timesteps(*args, **kwargs)
            self._noise_generator = torch.Generator().manual_seed(int(self.config.noise_seed))

        def step(self, model_output, timestep, sample, generator=None, return_dict: bool = True):
            if generator is None:
                generator = self._noise_generator
            return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)

    SeededLCMScheduler.__module__ = __name__
    _LCM_CLASS = SeededLCMScheduler
    return _LCM_CLASS


def make_scheduler(name: str = "ddim", guidance_scale: float | None = None, **overrides: Any):
    """Build a fresh diffusers scheduler by name (``ddim``, ``dpmpp``, ``unipc``, ``lcm``) with the V-Express schedule.

    ``overrides`` replace any constructor argument (e.g. ``solver_order=3``). A new instance is needed per video
    because multistep solvers are stateful. ``guidance_scale`` is not a scheduler setting: a sampler config
    (``conf/sampler/*.yaml``) may carry it as the apps' default guidance for that sampler; it is ignored here.
    """
    import diffusers

    key = str(name).lower()
    if key not in SAMPLERS:
        from vexpress.errors import InputError

        raise InputError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    cls_name, kwargs = SAMPLERS[key]
    config = {**NOISE_SCHEDULE, **kwargs, **overrides}
    cls = lcm_scheduler_class() if key == "lcm" else getattr(diffusers, cls_name)
    return cls(**config)


def sampler_name(scheduler: Any) -> str:
    """Our short name of a scheduler instance (or its class name if it is not one of ours)."""
    cls_name = type(scheduler).__name__
    if cls_name == "SeededLCMScheduler":
        return "lcm"
    for key, (name, _) in SAMPLERS.items():
        if name == cls_name:
            return key
    return cls_name
