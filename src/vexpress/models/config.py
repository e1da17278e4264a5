"""Network configuration: one dict format for the tiny test model, the parity model and the full SD1.5 model.

The format is that of ``shared/parity/dev/config.json`` (keys ``unet_config``, ``unet_additional_kwargs``,
``v_kps_guider``, ``audio_projection``); extra keys of that file (scheduler, sizes, ...) are ignored.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

SD15_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

#: ``unet_additional_kwargs`` of the official ``inference_v2.yaml``.
OFFICIAL_ADDITIONAL_KWARGS: dict[str, Any] = {
    "use_inflated_groupnorm": True,
    "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False,
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": True,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 32,
        "temporal_attention_dim_div": 1,
    },
}


@dataclass
class VExpressConfig:
    """Constructor arguments of the four trainable modules.

    Attributes:
        unet: diffusers ``UNet2DConditionModel`` config keys; builds the ReferenceNet and (with 3D blocks) the
            denoising UNet.
        unet_additional_kwargs: motion-module settings of the denoising UNet.
        v_kps_guider: ``VKpsGuider`` arguments.
        audio_projection: ``AudioProjection`` arguments.
        num_padding_audio_frames: ``p``: each frame sees the audio of frames i-p..i+p (2 -> 10 feature rows).
        vae_scaling_factor: latent scale of the VAE (0.18215 for sd-vae-ft-mse).
        latent_downscale: image pixels per latent pixel (8 for SD's VAE). The V-Kps guider must downscale by the
            same factor; small CPU models may use a VAE with fewer stages (e.g. 4).
    """

    unet: dict[str, Any]
    unet_additional_kwargs: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(OFFICIAL_ADDITIONAL_KWARGS))
    v_kps_guider: dict[str, Any] = field(default_factory=dict)
    audio_projection: dict[str, Any] = field(default_factory=dict)
    num_padding_audio_frames: int = 2
    vae_scaling_factor: float = 0.18215
    latent_downscale: int = 8

    def __post_init__(self) -> None:
        self.unet = {k: v for k, v in dict(self.unet).items() if not k.startswith("_")}
        ch = list(self.unet["block_out_channels"])
        xdim = int(self.unet.get("cross_attention_dim", 768))
        g = dict(self.v_kps_guider)
        g.setdefault("conditioning_embedding_channels", ch[0])
        g.setdefault("conditioning_channels", 3)
        g.setdefault("block_out_channels", [16, 32, 96, 256])
        self.v_kps_guider = g
        a = dict(self.audio_projection)
        a.setdefault("output_dim", xdim)
        a.setdefault("max_seq_len", 2 * (2 * self.num_padding_audio_frames + 1))
        self.audio_projection = a
        self.validate()

    def validate(self) -> None:
        ch = list(self.unet["block_out_channels"])
        xdim = int(self.unet.get("cross_attention_dim", 768))
        if self.v_kps_guider["conditioning_embedding_channels"] != ch[0]:
            raise ValueError("v_kps_guider.conditioning_embedding_channels must equal unet.block_out_channels[0]")
        guider_down = 2 ** (len(self.v_kps_guider["block_out_channels"]) - 1)
        if guider_down != self.latent_downscale:
            raise ValueError(
                f"the V-Kps guider downscales by {guider_down} but latents are 1/{self.latent_downscale} of the image"
            )
        if int(self.audio_projection["output_dim"]) != xdim:
            raise ValueError("audio_projection.output_dim must equal unet.cross_attention_dim")
        need = 2 * (2 * self.num_padding_audio_frames + 1)
        if int(self.audio_projection["max_seq_len"]) < need:
            raise ValueError(f"audio_projection.max_seq_len must be >= {need} (2*(2p+1) audio rows per frame)")
        if self.unet_additional_kwargs.get("use_motion_module", True):
            bad = [c for c in ch if c % 32]
            if bad:
                raise ValueError(f"with motion modules every block width must be a multiple of 32, got {ch}")

    # ---------------------------------------------------------------------------------------------------------
    @property
    def audio_embedding_dim(self) -> int:
        return int(self.audio_projection.get("embedding_dim", 768))

    @property
    def audio_rows_per_frame(self) -> int:
        return 2 * (2 * self.num_padding_audio_frames + 1)

    @property
    def max_frames_per_window(self) -> int:
        mm = self.unet_additional_kwargs.get("motion_module_kwargs", {})
        return int(mm.get("temporal_position_encoding_max_len", 32))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VExpressConfig":
        """Accept our own ``to_dict()`` output or the parity ``config.json`` layout (``unet_config`` key)."""
        d = dict(d)
        unet = d.get("unet", d.get("unet_config"))
        if unet is None:
            raise ValueError("network config needs a 'unet' (or 'unet_config') section")
        kwargs = {"unet": dict(unet)}
        for key in ("unet_additional_kwargs", "v_kps_guider", "audio_projection", "num_padding_audio_frames",
                    "vae_scaling_factor", "latent_downscale"):
            if key in d and d[key] is not None:
                kwargs[key] = copy.deepcopy(d[key])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | Path) -> "VExpressConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "unet": copy.deepcopy(self.unet),
            "unet_additional_kwargs": copy.deepcopy(self.unet_additional_kwargs),
            "v_kps_guider": copy.deepcopy(self.v_kps_guider),
            "audio_projection": copy.deepcopy(self.audio_projection),
            "num_padding_audio_frames": self.num_padding_audio_frames,
            "vae_scaling_factor": self.vae_scaling_factor,
            "latent_downscale": self.latent_downscale,
        }

    # ---------------------------------------------------------------------------------------------------------
    @classmethod
    def sd15(cls, audio_embedding_dim: int = 768) -> "VExpressConfig":
        """The released V-Express model: SD1.5 UNets, guider (16,32,96,256), 4-layer 768-wide projection."""
        return cls(
            unet=copy.deepcopy(SD15_UNET_CONFIG),
            v_kps_guider={"conditioning_embedding_channels": 320, "conditioning_channels": 3,
                          "block_out_channels": [16, 32, 96, 256]},
            audio_projection={"dim": 768, "depth": 4, "dim_head": 64, "heads": 12, "num_queries": 5,
                              "embedding_dim": audio_embedding_dim, "output_dim": 768, "ff_mult": 4,
                              "max_seq_len": 10},
        )

    @classmethod
    def tiny(
        cls,
        audio_embedding_dim: int = 768,
        block_out_channels: tuple[int, ...] = (32, 32, 64, 64),
        layers_per_block: int = 1,
        heads: int = 4,
        norm_num_groups: int = 16,
        cross_attention_dim: int = 64,
        motion_heads: int = 4,
        latent_downscale: int = 8,
        audio_projection_depth: int = 1,
    ) -> "VExpressConfig":
        """A small model with the full architecture (all blocks, all four attentions, motion modules) for tests,
        the embedded demo and CPU experiments. Latents are 1/``latent_downscale`` of the image size (SD: 8);
        ``audio_projection_depth``: the audio projection's perceiver layers (the release has 4)."""
        guider = {8: [8, 16, 32, 32], 4: [8, 16, 32], 2: [16, 32], 1: [32]}[latent_downscale]
        unet = copy.deepcopy(SD15_UNET_CONFIG)
        unet.update(block_out_channels=list(block_out_channels), layers_per_block=layers_per_block,
                    attention_head_dim=heads, norm_num_groups=norm_num_groups, cross_attention_dim=cross_attention_dim,
                    sample_size=8)
        extra = copy.deepcopy(OFFICIAL_ADDITIONAL_KWARGS)
        extra["motion_module_kwargs"]["num_attention_heads"] = motion_heads
        return cls(
            unet=unet,
            unet_additional_kwargs=extra,
            v_kps_guider={"conditioning_embedding_channels": block_out_channels[0], "conditioning_channels": 3,
                          "block_out_channels": guider},
            audio_projection={"dim": 64, "depth": int(audio_projection_depth), "dim_head": 32, "heads": 2,
                              "num_queries": 5,
                              "embedding_dim": audio_embedding_dim, "output_dim": cross_attention_dim, "ff_mult": 2,
                              "max_seq_len": 10},
            latent_downscale=latent_downscale,
        )
