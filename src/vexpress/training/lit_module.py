"""``VExpressLitModule``: the thin Lightning wrapper around the V-Express network (house style §4.7 rule 2).

Everything is injected, built by Hydra from ``conf/model/*.yaml``:

- ``net``: a :class:`vexpress.models.VExpressNet` (what trains);
- ``noise_scheduler``: a diffusers scheduler (the forward process; official: zero-SNR, trailing, v-prediction);
- ``optimizer`` / ``lr_scheduler``: ``functools.partial`` factories;
- ``vae``: the frozen ``diffusers.AutoencoderKL`` (only needed when batches carry images instead of cached latents);
- ``audio_encoder``: the frozen audio encoder, kept for sample videos (training batches carry audio features).

The module owns the loss wiring only. Which parameters train is decided by the stage (``StageScheduler``),
which conditions are dropped by ``ConditionDropout`` (it puts a :class:`DropMask` under ``batch["drop"]``); scalar
knobs such as the lip-loss weight are plain attributes that the curriculum sets per step.

Randomness: noise, timesteps and VAE samples come from a counter-based stream (:mod:`vexpress.training.rng`), so a
resumed run draws the same numbers as an uninterrupted one; the counter is stored in the checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from typing import Any, Callable, Mapping

import lightning.pytorch as pl
import torch

from vexpress.errors import InputError, ShapeError
from vexpress.training.caption_distill import CaptionDistillation
from vexpress.training.losses import diffusion_loss
from vexpress.training.noise import DiffusionTargets
from vexpress.training.optim import cosine_with_warmup
from vexpress.training.rng import generator_for

_FROZEN_PREFIXES = ("vae.", "audio_encoder.")
_CKPT_KEY = "vexpress"


class VExpressLitModule(pl.LightningModule):
    """Args:
    net: the network.
    noise_scheduler: diffusers scheduler defining the forward process and the prediction type.
    optimizer: ``optimizer(params) -> torch.optim.Optimizer`` (a ``_partial_`` config).
    lr_scheduler: optional ``lr_scheduler(optimizer) -> LRScheduler``, stepped every optimisation step.
    vae: frozen image autoencoder for batches without cached latents.
    audio_encoder: frozen audio encoder (used for sample videos only).
    snr_gamma: min-SNR gamma (official 5; 0 disables the weighting).
    noise_offset: offset-noise strength (official 0.05).
    lip_loss_weight: initial lip-region loss weight (the curriculum may change it per step).
    sample_reference_latent: encode the reference with a VAE posterior sample (official training) instead of its
        mean (official inference).
    seed: seed of the training random stream (noise, timesteps, VAE samples).
    compile_denoiser: ``torch.compile`` the denoising UNet on CUDA (ignored on CPU).
    caption_encoder: frozen :class:`~vexpress.models.caption.CaptionEncoder`; with it, the cross-attention
        (``attn2``) hears each batch's ``caption`` instead of its audio, as SD1.5's hears text (the embedded
        foundation's pretraining; ``data.captions=true``).
    caption_teacher: frozen :class:`~vexpress.models.caption.CaptionEncoder` for caption distillation
        (:mod:`vexpress.training.caption_distill`): the audio attention is also taught to make of the audio what it
        makes of the frame's caption (``data.captions=true``); the audio still drives the network.
    caption_distill_weight: weight of that term in the loss (0: off; a stage's ``caption_distill`` sets it).
    """

    def __init__(
        self,
        net: torch.nn.Module,
        noise_scheduler: Any,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_scheduler: Callable[..., Any] | None = None,
        vae: torch.nn.Module | None = None,
        audio_encoder: Any | None = None,
        snr_gamma: float = 5.0,
        noise_offset: float = 0.05,
        lip_loss_weight: float = 1.0,
        sample_reference_latent: bool = True,
        seed: int = 0,
        compile_denoiser: bool = False,
        caption_encoder: torch.nn.Module | None = None,
        caption_teacher: torch.nn.Module | None = None,
        caption_distill_weight: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters(
            ignore=["net", "noise_scheduler", "optimizer", "lr_scheduler", "vae", "audio_encoder", "caption_encoder",
                    "caption_teacher"],
            logger=False
        )
        self.net = net
        self.noise_scheduler = noise_scheduler
        self.targets = DiffusionTargets(noise_scheduler)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.vae = vae
        if vae is not None:
            vae.requires_grad_(False).eval()
        self.audio_encoder = audio_encoder
        if isinstance(audio_encoder, torch.nn.Module):
            audio_encoder.requires_grad_(False).eval()
        self.snr_gamma = float(snr_gamma)
        self.noise_offset = float(noise_offset)
        self.lip_loss_weight = float(lip_loss_weight)
        # relative probability of each training timestep (T,); None = uniform (official). A stage's
        # ``timestep_bias`` sets it (StageScheduler)
        self.timestep_weights: torch.Tensor | None = None
        # parameter group -> factor on the learning rate; a stage's ``lr_scale`` sets it (StageScheduler)
        self.lr_scale: dict[str, float] = {}
        # a stage's own learning-rate schedule over its steps (``StageSpec.lr_schedule`` plus ``total_steps``), used
        # instead of ``lr_scheduler``; None = ``lr_scheduler``. A stage's ``lr_schedule`` sets it (StageScheduler)
        self.stage_lr_schedule: dict[str, Any] | None = None
        self.sample_reference_latent = bool(sample_reference_latent)
        self.seed = int(seed)
        self.compile_denoiser = bool(compile_denoiser)
        self.train_draws = 0  # counter of the training random stream (saved in checkpoints)
        self.caption_encoder = caption_encoder
        if caption_encoder is not None:
            width = int(net.config.unet["cross_attention_dim"])
            if int(caption_encoder.dim) != width:
                raise InputError(f"the caption encoder makes {caption_encoder.dim}-d tokens but the denoiser's "
                                 f"cross-attention takes {width}-d; set its dim to {width}")
            caption_encoder.requires_grad_(False).eval()
        self.caption_teacher = caption_teacher
        self.caption_distill_weight = float(caption_distill_weight)
        if caption_teacher is not None:
            if caption_encoder is not None:
                raise InputError("model.caption_teacher distils captions into the audio path, model.caption_encoder "
                                 "replaces the audio by captions: set only one of them")
            width = int(net.config.unet["cross_attention_dim"])
            if int(caption_teacher.dim) != width:
                raise InputError(f"the caption teacher makes {caption_teacher.dim}-d tokens but the denoiser's "
                                 f"cross-attention takes {width}-d; set its dim to {width}")
            caption_teacher.requires_grad_(False).eval()
        if self.caption_distill_weight < 0 or self.caption_distill_weight != self.caption_distill_weight:
            raise InputError(f"model.caption_distill_weight must be >= 0, got {caption_distill_weight}")
        self._check_scaling()

    # --- helpers ----------------------------------------------------------------------------------------------
    @property
    def latent_scale(self) -> float:
        return float(self.net.config.vae_scaling_factor)

    def _check_scaling(self) -> None:
        if self.vae is None:
            return
        vae_scale = getattr(getattr(self.vae, "config", None), "scaling_factor", None)
        if vae_scale is not None and abs(float(vae_scale) - self.latent_scale) > 1e-6:
            raise InputError(
                f"VAE scaling_factor {vae_scale} differs from the network's vae_scaling_factor {self.latent_scale}; "
                "set model.net.config.vae_scaling_factor to the VAE's value"
            )

    def vae_downscale(self) -> int | None:
        """Image pixels per latent pixel of the VAE (``2 ** (levels - 1)`` of an ``AutoencoderKL``), or ``None``."""
        channels = getattr(getattr(self.vae, "config", None), "block_out_channels", None)
        return 2 ** (len(channels) - 1) if channels else None

    def check_data(self, image_size: int | None, latent_downscale: int | None, data_name: str = "",
                   model_name: str = "") -> None:
        """Raise a one-line :class:`InputError` when the data's frames do not fit this model and its VAE.

        ``latent_downscale`` (the data's: lip masks and cached latents are sized with it) must equal the network's
        ``latent_downscale`` and the VAE's; ``image_size`` must be a multiple of it.
        """
        data = f"data={data_name}" if data_name else "the data config"
        model = f"model={model_name}" if model_name else "the model config"
        net_down = int(self.net.config.latent_downscale)
        vae_down = self.vae_downscale()
        if vae_down is not None and vae_down != net_down:
            raise InputError(f"the VAE makes latents 1/{vae_down} of the image but model.net.config.latent_downscale "
                             f"is {net_down}: use a VAE and network of the same downscale (model/vae=... or "
                             f"model.net.config.latent_downscale={vae_down})")
        if latent_downscale is not None and int(latent_downscale) != net_down:
            fitting = {8: "model=sd15", 4: "model=tiny"}.get(int(latent_downscale))
            other = (f", or a model made for this data ({fitting})" if fitting and fitting != f"model={model_name}"
                     else "")
            raise InputError(f"data.latent_downscale={latent_downscale} ({data}) does not match {model}, whose latents "
                             f"are 1/{net_down} of the image: set data.latent_downscale={net_down}{other}")
        if image_size is not None and (int(image_size) <= 0 or int(image_size) % net_down):
            raise InputError(f"data.image_size={image_size} ({data}) is not a multiple of {net_down}, the latent "
                             f"downscale of {model}: set data.image_size to a multiple of {net_down}")

    def _rank(self) -> int:
        try:
            return int(self.global_rank)
        except Exception:  # noqa: BLE001 - not attached to a trainer
            return 0

    def train_generator(self) -> torch.Generator:
        """The generator of the next training draw (advances the counter)."""
        g = generator_for(self.seed, "train", self._rank(), self.train_draws)
        self.train_draws += 1
        return g

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
        """(B, 3, [F,] H, W) images in [-1, 1] -> scaled latents (B, 4, [F,] h, w) with the frozen VAE."""
        if self.vae is None:
            raise InputError("the batch has images but no cached latents, and the model has no VAE; add model.vae "
                             "to the config or cache latents in the data module")
        video = images.ndim == 5
        if video:
            b, c, f, h, w = images.shape
            images = images.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        if sample:
            eps = torch.randn(dist.mean.shape, generator=generator).to(dist.mean.device, dist.mean.dtype)
            lat = dist.mean + dist.std * eps
        else:
            lat = dist.mean
        lat = lat.float() * self.latent_scale
        if video:
            lat = lat.view(b, f, *lat.shape[1:]).permute(0, 2, 1, 3, 4)
        return lat

    def prepare(self, batch: Mapping[str, Any], generator: torch.Generator | None, sample: bool = True) -> dict:
        """Batch -> the network's inputs: ``latents`` (B,4,F,h,w), ``ref_latents`` (B,4,h,w), conditions, masks."""
        if "target_latents" in batch:
            latents = batch["target_latents"].float()
        elif "target_images" in batch:
            latents = self.encode_images(batch["target_images"], sample, generator)
        else:
            raise InputError("batch has neither target_latents nor target_images (see vexpress.data.batch)")
        if "reference_latents" in batch:
            ref = batch["reference_latents"].float()
        elif "reference_image" in batch:
            ref = self.encode_images(batch["reference_image"], sample and self.sample_reference_latent, generator)
        else:
            raise InputError("batch has neither reference_latents nor reference_image (see vexpress.data.batch)")
        if latents.ndim != 5:
            raise ShapeError(f"target latents must be (B, 4, F, h, w), got {tuple(latents.shape)}")
        audio_tokens = None
        if self.caption_encoder is not None:
            audio_tokens = self._caption_tokens(self.caption_encoder, batch, latents, "the model has a caption encoder "
                                                "but the batch has no captions", "model.caption_encoder=null")
        return {
            "latents": latents,
            "ref_latents": ref,
            "kps_images": batch["kps_images"],
            "audio_windows": batch["audio_windows"],
            "audio_tokens": audio_tokens,
            "lip_masks": batch.get("lip_masks"),
        }

    # --- Lightning hooks ----------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.compile_denoiser and torch.cuda.is_available() and self.device.type == "cuda":
            self.net.denoising_unet = torch.compile(self.net.denoising_unet)

    def diffusion_step(self, batch: Mapping[str, Any], generator: torch.Generator, drop=None):
        """Noise a batch, predict, and return the :class:`LossOutput`."""
        from vexpress.models.conditioning import DropMask

        x = self.prepare(batch, generator)
        latents = x["latents"]
        b = latents.shape[0]
        noise = self.targets.sample_noise(latents, self.noise_offset, generator)
        t = self.targets.sample_timesteps(b, generator, latents.device, self.timestep_weights)
        noisy = self.targets.add_noise(latents, noise, t)
        target = self.targets.target(latents, noise, t)
        if drop is None:
            drop = DropMask.none(b, latents.device)
        distill = self._caption_distillation(batch, latents)
        with distill if distill is not None else contextlib.nullcontext():
            pred = self.net(noisy, t, ref_latents=x["ref_latents"], audio_windows=x["audio_windows"],
                            audio_tokens=x["audio_tokens"], kps_images=x["kps_images"], drop=drop.to(latents.device))
        out = diffusion_loss(pred, target, self.targets.snr(t), snr_gamma=self.snr_gamma,
                             v_prediction=self.targets.v_prediction, lip_masks=x["lip_masks"],
                             lip_loss_weight=self.lip_loss_weight)
        if distill is not None:
            term = distill.loss()
            out = dataclasses.replace(out, loss=out.loss + self.caption_distill_weight * term,
                                      caption_distill=term.detach())
        return out

    def _caption_distillation(self, batch: Mapping[str, Any], latents: torch.Tensor):
        """The caption-distillation hooks for this step, or None when the term is off."""
        if self.caption_teacher is None or self.caption_distill_weight <= 0:
            return None
        tokens = self._caption_tokens(self.caption_teacher, batch, latents, "caption distillation needs each frame's "
                                      "caption in the batch", "caption_distill=0")
        return CaptionDistillation(self.net, tokens)

    @staticmethod
    def _caption_tokens(encoder: torch.nn.Module, batch: Mapping[str, Any], latents: torch.Tensor, missing: str,
                        instead: str) -> torch.Tensor:
        """The batch's ``caption`` (B, F, attributes) through ``encoder``; one-line errors when absent or misshapen."""
        if "caption" not in batch:
            raise InputError(f"{missing}; set data.captions=true (synthetic data) or {instead}")
        caption = batch["caption"].to(latents.device)
        if caption.shape[:2] != (latents.shape[0], latents.shape[2]):
            raise ShapeError(f"captions {tuple(caption.shape)} must be (B, F, attributes) to match the latents "
                             f"{tuple(latents.shape)}")
        return encoder.to(latents.device)(caption)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        out = self.diffusion_step(batch, self.train_generator(), batch.get("drop"))
        bs = int(batch["kps_images"].shape[0])
        self.log("train/loss", out.loss, prog_bar=True, batch_size=bs, sync_dist=False)
        self.log("train/mse", out.mse, batch_size=bs)
        if out.lip_mse is not None:
            self.log("train/loss_lip", out.lip_mse, batch_size=bs)
        if out.caption_distill is not None:
            self.log("train/caption_distill", out.caption_distill, batch_size=bs)
        self.log("train/snr_weight", out.snr_weights.mean(), batch_size=bs)
        return out.loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        g = generator_for(self.seed, "val", batch_idx)
        out = self.diffusion_step(batch, g, None)
        bs = int(batch["kps_images"].shape[0])
        self.log("val/loss", out.loss, batch_size=bs, sync_dist=True)
        if out.lip_mse is not None:
            self.log("val/loss_lip", out.lip_mse, batch_size=bs, sync_dist=True)

    def configure_optimizers(self):
        params = [p for p in self.net.parameters() if p.requires_grad]
        if not params:
            raise InputError("no trainable parameters: the stage config freezes everything")
        kwargs = {}
        precision = str(getattr(getattr(self, "_trainer", None), "precision", "") or "")
        if "mixed" in precision and "fused" in inspect.signature(self.optimizer_factory).parameters:
            kwargs["fused"] = False  # Lightning's mixed-precision plugin cannot clip a fused optimizer's gradients
        optimizer = self.optimizer_factory(self._param_groups(params), **kwargs)
        for group in optimizer.param_groups:  # the stage's per-group factors, before the scheduler records the rates
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        if self.stage_lr_schedule is not None:
            sched = dict(self.stage_lr_schedule)
            sched.pop("name")  # "cosine", the one kind (StageSpec checked it)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine_with_warmup(optimizer, **sched),
                                                             "interval": "step"}}
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.lr_scheduler_factory(optimizer), "interval": "step"}}

    def _param_groups(self, params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter] | list[dict[str, Any]]:
        """``params`` as one group, or split by the stage's ``lr_scale`` (parameter group -> factor on the rate)."""
        if not self.lr_scale:
            return params
        by_name = dict(self.net.named_parameters())
        names = self.net.parameter_groups()
        scaled, taken = [], set()
        for group, factor in sorted(self.lr_scale.items()):
            members = [by_name[n] for n in names[group] if by_name[n].requires_grad]
            taken.update(id(p) for p in members)
            if members:
                scaled.append({"params": members, "lr_scale": float(factor), "name": group})
        rest = [p for p in params if id(p) not in taken]
        return ([{"params": rest, "lr_scale": 1.0, "name": "rest"}] if rest else []) + scaled

    # --- checkpoints: frozen helpers are not stored; the random stream's counter is ---------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        sd = checkpoint.get("state_dict", {})
        for key in [k for k in sd if k.startswith(_FROZEN_PREFIXES)]:
            del sd[key]
        checkpoint[_CKPT_KEY] = {"train_draws": int(self.train_draws), "seed": int(self.seed)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        sd = checkpoint.setdefault("state_dict", {})
        for key, value in self.state_dict().items():
            if key.startswith(_FROZEN_PREFIXES):
                sd.setdefault(key, value)
        state = checkpoint.get(_CKPT_KEY, {})
        self.train_draws = int(state.get("train_draws", 0))
