"""Latent consistency distillation (LCD) of a trained V-Express teacher into a few-step student.

The student is a full copy of the network (every condition encoder and attention path kept, official file layout on
export) trained to be a *consistency function* of the teacher's guided probability-flow ODE, so that the ``lcm``
sampler (:mod:`vexpress.pipelines.schedulers`) draws a video in 1-8 denoiser calls without an unconditional branch.

One training step (LCM, Luo et al. 2023, with the guidance folded into the teacher's target)::

    t = (i + 1) * k - 1, i ~ U{0..N-1}          the teacher's DDIM grid (k = solver_skip, N = 1000 / k points,
    s = t - k                                    trailing spacing: 999, 979, ... 19; s = -1 is the clean end)
    x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps
    f_student = c_skip(t) x_t + c_out(t) x0_hat(x_t, t, v_student)
    v_teacher = v_u + w (v_c - v_u)             guided teacher (official CFG expression; w <= 1: v_c alone)
    x_s = DDIM(x_t, v_teacher, t -> s)          one deterministic DDIM step (eta = 0)
    f_target = c_skip(s) x_s + c_out(s) x0_hat(x_s, s, v_target)     (x_s itself when s = -1)
    loss = mean( lip_w * huber(f_student - f_target) )

``v_target`` comes from a frozen target network, an exponential moving average (``ema_decay``, LCM: 0.95) of the
student, updated after every optimisation step. With ``a`` = alpha_bar of the zero-terminal-SNR schedule::

    x0_hat = sqrt(a) x - sqrt(1 - a) v          eps_hat = sqrt(1 - a) x + sqrt(a) v

(no division: the ``t = 999`` point, where ``a = 0``, gives ``x0_hat = -v``). The consistency parameterisation
``c_skip(t) = sd^2 / ((st)^2 + sd^2)``, ``c_out(t) = st / sqrt((st)^2 + sd^2)`` with ``sd = 0.5`` and
``s = timestep_scaling`` (10) is the one diffusers' ``LCMScheduler`` applies at sampling time; its boundary
condition ``f(x, end) = x`` is applied at the clean end of the trailing grid (``s = -1``, ``alpha_bar = 1``).

Guidance: one fixed scale ``w`` (``guidance_scale``) is folded into the target. A per-sample ``w`` with a
w-embedding would add parameters the official five-file layout has no place for, so it is not offered.

Networks: the teacher is a frozen copy of the student's initial weights (``stage.init_from``), or ``teacher=DIR``
(any export or official folder). Teacher and target share the student's frozen parameters (condition encoders kept
frozen by the stage) instead of copying them. Neither is registered as a submodule: they are not in the
``state_dict``, not wrapped by DDP, and not exported. Checkpoints store the target's averaged parameters and the
number of its updates, so a resumed run continues exactly (the random stream is the base module's counter).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import torch

from vexpress.errors import InputError
from vexpress.training.lit_module import VExpressLitModule
from vexpress.training.rng import generator_for

log = logging.getLogger(__name__)

_CKPT_KEY = "vexpress_distill"
SIGMA_DATA = 0.5


# -------------------------------------------------------------------------------------------------------------------
# pure functions
# -------------------------------------------------------------------------------------------------------------------
def solver_grid(num_train_timesteps: int, skip: int) -> torch.Tensor:
    """The teacher's DDIM timesteps ``(i + 1) * skip - 1`` for ``i = 0..N-1`` (trailing spacing, ends at T-1)."""
    skip, total = int(skip), int(num_train_timesteps)
    if skip < 1 or total % skip:
        raise InputError(f"solver_skip={skip} must be a divisor of the {total} training timesteps (e.g. 20: a "
                         f"{total // 20}-point DDIM grid)")
    return torch.arange(1, total // skip + 1, dtype=torch.long) * skip - 1


def boundary_scalings(t: torch.Tensor, timestep_scaling: float = 10.0,
                      sigma_data: float = SIGMA_DATA) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c_skip, c_out)`` of the consistency parameterisation per timestep (float64); ``t < 0`` (the clean end)
    gives the boundary ``(1, 0)``."""
    st = t.to(torch.float64) * float(timestep_scaling)
    c_skip = sigma_data ** 2 / (st ** 2 + sigma_data ** 2)
    c_out = st / (st ** 2 + sigma_data ** 2).sqrt()
    end = t < 0
    return torch.where(end, torch.ones_like(c_skip), c_skip), torch.where(end, torch.zeros_like(c_out), c_out)


def alpha_bar(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """alpha_bar per timestep (float64); ``t < 0`` is the clean end (1)."""
    a = alphas_cumprod.to(device=t.device, dtype=torch.float64)[t.clamp_min(0).long()]
    return torch.where(t < 0, torch.ones_like(a), a)


def _view(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return c.view((-1,) + (1,) * (like.ndim - 1)).to(like.dtype)


def x0_from_v(x: torch.Tensor, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Clean-sample estimate of a v-prediction: ``sqrt(a) x - sqrt(1 - a) v``."""
    return _view(a.sqrt(), x) * x - _view((1 - a).sqrt(), x) * v


def eps_from_v(x: torch.Tensor, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Noise estimate of a v-prediction: ``sqrt(1 - a) x + sqrt(a) v``."""
    return _view((1 - a).sqrt(), x) * x + _view(a.sqrt(), x) * v


def ddim_step(x_t: torch.Tensor, v: torch.Tensor, a_t: torch.Tensor, a_s: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from alpha_bar ``a_t`` to ``a_s`` with a v-prediction."""
    return _view(a_s.sqrt(), x_t) * x0_from_v(x_t, v, a_t) + _view((1 - a_s).sqrt(), x_t) * eps_from_v(x_t, v, a_t)


def consistency_output(x: torch.Tensor, v: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor,
                       timestep_scaling: float = 10.0) -> torch.Tensor:
    """``f(x, t) = c_skip(t) x + c_out(t) x0_hat(x, t)``; at ``t < 0`` this is ``x`` (boundary condition)."""
    c_skip, c_out = boundary_scalings(t, timestep_scaling)
    x0 = x0_from_v(x, v, alpha_bar(alphas_cumprod, t))
    return _view(c_skip, x) * x + _view(c_out, x) * x0


def consistency_distance(a: torch.Tensor, b: torch.Tensor, kind: str = "huber", huber_c: float = 1e-3) -> torch.Tensor:
    """Elementwise distance in float32: pseudo-Huber ``sqrt(d^2 + c^2) - c`` (LCM) or squared error ``l2``."""
    d = a.float() - b.float()
    if kind == "l2":
        return d ** 2
    c = float(huber_c)
    return torch.sqrt(d ** 2 + c * c) - c


# -------------------------------------------------------------------------------------------------------------------
# LightningModule
# -------------------------------------------------------------------------------------------------------------------
class ConsistencyDistillModule(VExpressLitModule):
    """The distillation stage's LightningModule (``conf/stage/distill.yaml`` selects it).

    Args (besides those of :class:`VExpressLitModule`, whose ``snr_gamma`` is unused here):
        teacher: export / official folder of the teacher; ``None``: the student's weights at the start of the stage
            (``stage.init_from``), frozen.
        guidance_scale: classifier-free guidance ``w`` of the teacher folded into the target (official sampling:
            3.5; ``<= 1``: the conditional prediction alone, one teacher branch).
        solver_skip: timesteps skipped by one teacher DDIM step (``k``; 20 = a 50-point grid, LCM's default).
        ema_decay: decay of the target network's moving average of the student (LCM: 0.95).
        timestep_scaling: ``s`` of ``c_skip``/``c_out`` (LCM and diffusers' ``LCMScheduler``: 10).
        loss_type: ``huber`` (pseudo-Huber, LCM) or ``l2``.
        huber_c: the pseudo-Huber constant.
        reference_attention_weight, audio_attention_weight: the attention weights of all three networks during
            distillation (1: as in the other stages' training).
    """

    def __init__(self, *args: Any, teacher: str | None = None, guidance_scale: float = 3.5, solver_skip: int = 20,
                 ema_decay: float = 0.95, timestep_scaling: float = 10.0, loss_type: str = "huber",
                 huber_c: float = 1e-3, reference_attention_weight: float = 1.0,
                 audio_attention_weight: float = 1.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not self.targets.v_prediction:
            raise InputError("the distillation stage needs a v-prediction teacher: use noise_scheduler=zero_snr_v")
        if not 0.0 <= float(ema_decay) < 1.0:
            raise InputError(f"ema_decay={ema_decay} must be in [0, 1) (LCM: 0.95)")
        if loss_type not in ("huber", "l2"):
            raise InputError(f"loss_type={loss_type!r} must be huber or l2")
        if not float(guidance_scale) >= 0:
            raise InputError(f"guidance_scale={guidance_scale} must be >= 0 (official 3.5; <= 1: no guidance)")
        self.teacher_path = str(teacher) if teacher not in (None, "", "null", "None") else None
        self.guidance_scale = float(guidance_scale)
        self.solver_skip = int(solver_skip)
        self.grid = solver_grid(self.targets.num_train_timesteps, self.solver_skip)
        self.ema_decay = float(ema_decay)
        self.timestep_scaling = float(timestep_scaling)
        self.loss_type = str(loss_type)
        self.huber_c = float(huber_c)
        self.reference_attention_weight = float(reference_attention_weight)
        self.audio_attention_weight = float(audio_attention_weight)
        self.ema_updates = 0  # target updates so far (one per optimisation step)
        # not submodules on purpose (see the module docstring): a plain dict keeps them out of state_dict and DDP
        self._aux: dict[str, torch.nn.Module] = {}
        self._tracked: list[str] = []

    # --- the teacher and the target ---------------------------------------------------------------------------
    @property
    def teacher(self) -> torch.nn.Module:
        self.build_networks()
        return self._aux["teacher"]

    @property
    def target_net(self) -> torch.nn.Module:
        self.build_networks()
        return self._aux["target"]

    def build_networks(self) -> None:
        """Make the frozen teacher and the EMA target from the student's current weights (once)."""
        if self._aux:
            return
        net = self.net
        self._tracked = [n for n, p in net.named_parameters() if p.requires_grad]
        if not self._tracked:
            raise InputError("no trainable parameters: the distillation stage config freezes everything")
        tracked = set(self._tracked)

        from vexpress.models.vexpress_net import VExpressNet

        shared = {name for name, child in net.named_children()
                  if not any(f"{name}.{n}" in tracked for n, _ in child.named_parameters())}

        def frozen_copy(path: str | None = None) -> torch.nn.Module:
            # a fresh network (its ReferenceNet hooks bound to itself; a deepcopy would keep the student's), whose
            # fully frozen children are the student's own modules (condition encoders), not copies
            with torch.random.fork_rng(devices=[]):  # building draws random initial weights: keep the global stream
                out = VExpressNet(net.config)
            if path is None:
                for name in shared:
                    setattr(out, name, getattr(net, name))
                out.load_state_dict(net.state_dict())
            else:
                from vexpress.training.export import load_weights

                load_weights(out, path)
            out.to(device=net.device, dtype=net.dtype)
            for name, child in out.named_children():
                if getattr(net, name) is not child:
                    child.requires_grad_(False).eval()
            return out

        teacher = frozen_copy(self.teacher_path)
        self._aux = {"teacher": teacher, "target": frozen_copy(None)}

    def _move_networks(self) -> None:
        for m in self._aux.values():
            m.to(device=self.net.device)

    @torch.no_grad()
    def update_target(self) -> None:
        """One EMA step of the target towards the student's trainable parameters."""
        student = dict(self.net.named_parameters())
        target = dict(self.target_net.named_parameters())
        d = self.ema_decay
        for name in self._tracked:
            t, s = target[name], student[name].detach()
            t.mul_(d).add_(s.to(t.dtype), alpha=1.0 - d)

    # --- the loss ---------------------------------------------------------------------------------------------
    def _call(self, net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Mapping[str, Any], drop):
        return net(x, t, ref_latents=cond["ref_latents"], audio_windows=cond["audio_windows"],
                   kps_images=cond["kps_images"], drop=drop,
                   reference_attention_weight=self.reference_attention_weight,
                   audio_attention_weight=self.audio_attention_weight)

    def distill_step(self, batch: Mapping[str, Any], generator: torch.Generator, drop=None) -> dict[str, torch.Tensor]:
        """One consistency-distillation loss (see the module docstring); returns ``loss`` and logging scalars."""
        from vexpress.models.conditioning import DropMask

        self.build_networks()
        x = self.prepare(batch, generator)
        latents = x["latents"]
        b, dev = latents.shape[0], latents.device
        ac = self.targets.alphas_cumprod
        noise = self.targets.sample_noise(latents, self.noise_offset, generator)
        index = torch.randint(0, len(self.grid), (b,), generator=generator)
        t = self.grid[index].to(dev)
        s = t - self.solver_skip
        x_t = self.targets.add_noise(latents, noise, t)
        drop = (drop if drop is not None else DropMask.none(b, dev)).to(dev)

        v_student = self._call(self.net, x_t, t, x, drop)
        f_student = consistency_output(x_t, v_student.float(), t, ac, self.timestep_scaling)
        with torch.no_grad():
            v_teacher = self._call(self.teacher, x_t, t, x, drop).float()
            if self.guidance_scale > 1.0:
                v_uncond = self._call(self.teacher, x_t, t, x, DropMask.all(b, dev)).float()
                v_teacher = v_uncond + self.guidance_scale * (v_teacher - v_uncond)
            x_s = ddim_step(x_t.float(), v_teacher, alpha_bar(ac, t), alpha_bar(ac, s))
            if bool((s >= 0).any()):
                v_target = self._call(self.target_net, x_s.to(x_t.dtype), s.clamp_min(0), x, drop).float()
                f_target = consistency_output(x_s, v_target, s, ac, self.timestep_scaling)
            else:
                f_target = x_s  # every sample at the clean end: the boundary condition alone
        err = consistency_distance(f_student, f_target, self.loss_type, self.huber_c)
        lip_masks = x["lip_masks"]
        weighted = err
        if lip_masks is not None and self.lip_loss_weight != 1.0:
            from vexpress.training.losses import lip_weight_map

            weighted = err * lip_weight_map(lip_masks.float(), self.lip_loss_weight)
        return {"loss": weighted.mean(), "distance": err.mean().detach(),
                "mse_to_teacher_x0": ((f_student.detach().float()
                                       - x0_from_v(x_t.float(), v_teacher, alpha_bar(ac, t))) ** 2).mean(),
                "t": t.float().mean()}

    # --- Lightning hooks ----------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # the curriculum callback's setup (stage weights, requires_grad) has run; copy before any torch.compile
        self.build_networks()
        super().setup(stage)

    def on_fit_start(self) -> None:
        self._move_networks()
        if self.ema_updates:
            log.info("distillation: target network restored after %d EMA updates", self.ema_updates)

    def on_validation_start(self) -> None:
        self.build_networks()
        self._move_networks()

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.distill_step(batch, self.train_generator(), batch.get("drop"))
        bs = int(batch["kps_images"].shape[0])
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=bs, sync_dist=False)
        self.log("train/consistency_distance", out["distance"], batch_size=bs)
        self.log("train/mse_to_teacher_x0", out["mse_to_teacher_x0"], batch_size=bs)
        self.log("train/timestep", out["t"], batch_size=bs)
        return out["loss"]

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # the target follows right after each optimisation step, before any callback (checkpoint) sees the step
        super().optimizer_step(*args, **kwargs)
        self.update_target()
        self.ema_updates += 1

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        out = self.distill_step(batch, generator_for(self.seed, "val", batch_idx), None)
        bs = int(batch["kps_images"].shape[0])
        self.log("val/loss", out["loss"], batch_size=bs, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        target = dict(self.target_net.named_parameters())
        checkpoint[_CKPT_KEY] = {"ema_updates": int(self.ema_updates),
                                 "target": {n: target[n].detach().cpu().clone() for n in self._tracked}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get(_CKPT_KEY)
        if not state:
            raise InputError("the checkpoint has no distillation target network (it was not written by the "
                             "distillation stage); start the stage afresh (delete its checkpoints folder)")
        saved = state["target"]
        target = dict(self.target_net.named_parameters())
        missing = [n for n in self._tracked if n not in saved]
        if missing:
            raise InputError(f"the checkpoint's target network lacks {len(missing)} trained parameters (e.g. "
                             f"{missing[0]}): it was written with another trainable set; start the stage afresh")
        with torch.no_grad():
            for n in self._tracked:
                target[n].copy_(saved[n])
        self.ema_updates = int(state["ema_updates"])
