"""VExpressNet: the four trainable modules of V-Express and one forward that conditions the denoiser on them.

Shapes (B clips, F frames, latents h x w = image H/8 x W/8)::

    ref_latents    (B, 4, h, w)            VAE latent of the reference image, already x vae_scaling_factor
    kps_images     (B, 3, F, H, W) [0, 1]  V-Kps drawings (not normalised to [-1, 1])
    audio_windows  (B, F, 10, D)           per-frame audio feature windows (vexpress.audio.windows)
    noisy_latents  (B, 4, F, h, w)
    output         (B, 4, F, h, w)         v-prediction (as trained)

The expensive, constant parts are separable: :meth:`encode_reference` (run once per reference image),
:meth:`encode_kps` and :meth:`encode_audio` (once per clip or window), so the sampling loop only calls the
denoiser. :meth:`forward` does everything at once for training.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from vexpress.errors import ShapeError
from vexpress.models.audio_projection import AudioProjection
from vexpress.models.conditioning import DropMask, ReferenceBank
from vexpress.models.config import VExpressConfig
from vexpress.models.kps_guider import VKpsGuider
from vexpress.models.reference_net import ReferenceNet
from vexpress.models.unet_3d_condition import UNet3DConditionModel

#: The module attribute names, also the official checkpoint file stems (plus ``motion_module``).
MODULES = ("reference_net", "denoising_unet", "v_kps_guider", "audio_projection")

#: Parameter groups used by the training stages (spec §4.1 trainability rules), in matching priority.
PARAMETER_GROUPS = (
    "reference_net_frozen",  # reference_net up_blocks.3: frozen in every official stage
    "reference_net",  # the rest of the ReferenceNet
    "motion_modules",  # denoising_unet.*motion_modules*
    "audio_attention",  # denoising_unet.*attentions*.(attn2|norm2)
    "reference_attention",  # denoising_unet.*(attn1_5|norm1_5)
    "denoiser_base",  # every other denoising_unet parameter (the SD1.5 UNet)
    "v_kps_guider",
    "audio_projection",
)


def parameter_group(name: str) -> str:
    """Map a ``VExpressNet.named_parameters()`` name to its group in :data:`PARAMETER_GROUPS`."""
    module, _, rest = name.partition(".")
    if module == "reference_net":
        return "reference_net_frozen" if "up_blocks.3" in rest else "reference_net"
    if module == "denoising_unet":
        if "motion_modules" in rest:
            return "motion_modules"
        if "attentions" in rest and (".attn2." in rest or ".norm2." in rest):
            return "audio_attention"
        if ".attn1_5." in rest or ".norm1_5." in rest:
            return "reference_attention"
        return "denoiser_base"
    if module in ("v_kps_guider", "audio_projection"):
        return module
    raise KeyError(f"parameter {name!r} belongs to no V-Express module")


class VExpressNet(nn.Module):
    """ReferenceNet + denoising UNet + V-Kps guider + audio projection, built from a :class:`VExpressConfig`."""

    def __init__(self, config: VExpressConfig | Mapping[str, Any]):
        super().__init__()
        if not isinstance(config, VExpressConfig):
            config = VExpressConfig.from_dict(config)
        self.config = config
        self.reference_net = ReferenceNet(config.unet)
        self.denoising_unet = UNet3DConditionModel(config.unet, config.unet_additional_kwargs)
        self.v_kps_guider = VKpsGuider(**config.v_kps_guider)
        self.audio_projection = AudioProjection(**config.audio_projection)

    @property
    def dtype(self) -> torch.dtype:
        return self.denoising_unet.dtype

    @property
    def device(self) -> torch.device:
        return self.denoising_unet.conv_in.weight.device

    def parameter_groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {g: [] for g in PARAMETER_GROUPS}
        for name, _ in self.named_parameters():
            groups[parameter_group(name)].append(name)
        return groups

    def set_gradient_checkpointing(self, denoiser: bool = True, reference_net: bool = False) -> None:
        self.denoising_unet.set_gradient_checkpointing(denoiser)
        self.reference_net.set_gradient_checkpointing(reference_net)

    # --- condition encoders --------------------------------------------------------------------------------------
    def encode_reference(self, ref_latents: torch.Tensor) -> ReferenceBank:
        """ReferenceNet at t=0 with a zero text token -> per-block bank (compute once per reference image)."""
        return self.reference_net(ref_latents)

    def encode_kps(self, kps_images: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) V-Kps images in [0, 1] -> (B, C0, F, H/8, W/8) features."""
        return self.v_kps_guider(kps_images)

    def encode_audio(self, audio_windows: torch.Tensor) -> torch.Tensor:
        """(B, F, 10, D) audio windows -> (B, F, 5, cross_attention_dim) tokens."""
        if audio_windows.ndim != 4:
            raise ShapeError(f"audio windows must be (B, F, tokens, D), got {tuple(audio_windows.shape)}")
        b, f = audio_windows.shape[:2]
        tokens = self.audio_projection(audio_windows.reshape(b * f, *audio_windows.shape[2:]))
        return tokens.view(b, f, *tokens.shape[1:])

    # --- denoiser ------------------------------------------------------------------------------------------------
    def forward(
        self,
        noisy_latents: torch.Tensor,
        timesteps: torch.Tensor | int,
        *,
        ref_latents: torch.Tensor | None = None,
        audio_windows: torch.Tensor | None = None,
        kps_images: torch.Tensor | None = None,
        reference: ReferenceBank | None = None,
        audio_tokens: torch.Tensor | None = None,
        kps_features: torch.Tensor | None = None,
        drop: DropMask | None = None,
        reference_attention_weight: float = 1.0,
        audio_attention_weight: float = 1.0,
    ) -> torch.Tensor:
        """Predict the training target for ``noisy_latents`` under the given conditions.

        Give each condition either raw (``ref_latents``, ``audio_windows``, ``kps_images``) or pre-encoded
        (``reference``, ``audio_tokens``, ``kps_features``), or leave it out (treated as dropped). A condition
        that ``drop`` removes for every sample is not encoded at all.
        """
        if noisy_latents.ndim != 5:
            raise ShapeError(f"noisy latents must be (B, 4, F, h, w), got {tuple(noisy_latents.shape)}")
        b, _, f, h, w = noisy_latents.shape
        if drop is not None and drop.batch_size != b:
            raise ShapeError(f"drop mask has {drop.batch_size} samples, latents have {b}")

        def all_dropped(mask: torch.Tensor | None) -> bool:
            return mask is not None and bool(mask.all())

        if reference is None and ref_latents is not None and not all_dropped(drop and drop.reference):
            if ref_latents.shape[0] not in (1, b) or ref_latents.shape[-2:] != (h, w):
                raise ShapeError(
                    f"reference latents {tuple(ref_latents.shape)} do not match noisy latents "
                    f"{tuple(noisy_latents.shape)} (need batch 1 or B and the same h, w)"
                )
            reference = self.encode_reference(ref_latents)
        if kps_features is None and kps_images is not None and not all_dropped(drop and drop.kps):
            if kps_images.ndim != 5 or kps_images.shape[0] != b or kps_images.shape[2] != f:
                raise ShapeError(
                    f"kps images {tuple(kps_images.shape)} must be (B={b}, 3, F={f}, H, W) to match the latents"
                )
            kps_features = self.encode_kps(kps_images)
        if audio_tokens is None and audio_windows is not None and not all_dropped(drop and drop.audio):
            if audio_windows.ndim != 4 or audio_windows.shape[:2] != (b, f):
                raise ShapeError(
                    f"audio windows {tuple(audio_windows.shape)} must be (B={b}, F={f}, tokens, D) to match the latents"
                )
            audio_tokens = self.encode_audio(audio_windows)
        return self.denoising_unet(
            noisy_latents,
            timesteps,
            audio_tokens=audio_tokens,
            kps_features=kps_features,
            reference=reference,
            drop=drop,
            reference_attention_weight=reference_attention_weight,
            audio_attention_weight=audio_attention_weight,
        )
