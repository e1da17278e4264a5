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
============  =================================  ============================================================

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
}

#: Default number of steps per sampler (what ``num_inference_steps=null`` means).
DEFAULT_STEPS = {"ddim": 25, "dpmpp": 12, "unipc": 10}


def make_scheduler(name: str = "ddim", **overrides: Any):
    """Build a fresh diffusers scheduler by name (``ddim``, ``dpmpp``, ``unipc``) with the V-Express schedule.

    ``overrides`` replace any constructor argument (e.g. ``solver_order=3``). A new instance is needed per video
    because multistep solvers are stateful.
    """
    import diffusers

    key = str(name).lower()
    if key not in SAMPLERS:
        from vexpress.errors import InputError

        raise InputError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    cls_name, kwargs = SAMPLERS[key]
    config = {**NOISE_SCHEDULE, **kwargs, **overrides}
    return getattr(diffusers, cls_name)(**config)


def sampler_name(scheduler: Any) -> str:
    """Our short name of a scheduler instance (or its class name if it is not one of ours)."""
    cls_name = type(scheduler).__name__
    for key, (name, _) in SAMPLERS.items():
        if name == cls_name:
            return key
    return cls_name
