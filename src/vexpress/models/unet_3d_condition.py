"""The V-Express denoising UNet: SD1.5 applied per frame + reference/audio attention + AnimateDiff motion modules.

State-dict names equal the official ``denoising_unet`` checkpoint (``official_state_dict_keys.txt``): the 686 SD1.5
UNet keys, plus ``attn1_5``/``norm1_5`` in each of the 16 spatial transformer blocks, plus the motion modules.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from vexpress.errors import ShapeError
from vexpress.models.conditioning import DenoiseContext, DropMask, ReferenceBank
from vexpress.models.transformer_3d import TemporalBasicTransformerBlock
from vexpress.models.unet_3d_blocks import (
    CrossAttnDownBlock3D,
    CrossAttnUpBlock3D,
    DownBlock3D,
    UNetMidBlock3DCrossAttn,
    UpBlock3D,
    _Block,
)

_DOWN = {"CrossAttnDownBlock2D": CrossAttnDownBlock3D, "CrossAttnDownBlock3D": CrossAttnDownBlock3D,
         "DownBlock2D": DownBlock3D, "DownBlock3D": DownBlock3D}
_UP = {"CrossAttnUpBlock2D": CrossAttnUpBlock3D, "CrossAttnUpBlock3D": CrossAttnUpBlock3D,
       "UpBlock2D": UpBlock3D, "UpBlock3D": UpBlock3D}


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B*F, C, H, W), batch outermost."""
    b, c, f, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)


def batch_to_frames(x: torch.Tensor, video_length: int) -> torch.Tensor:
    """(B*F, C, H, W) -> (B, C, F, H, W)."""
    bf, c, h, w = x.shape
    return x.view(bf // video_length, video_length, c, h, w).permute(0, 2, 1, 3, 4)


class UNet3DConditionModel(nn.Module):
    """Denoising UNet built from an SD1.5-style UNet config plus V-Express's ``unet_additional_kwargs``.

    Args:
        unet_config: the keys of a diffusers ``UNet2DConditionModel`` config (``block_out_channels``,
            ``layers_per_block``, ``attention_head_dim`` (= number of heads, diffusers' SD1.5 convention),
            ``cross_attention_dim``, ``norm_num_groups``, ``norm_eps``, block types, ...).
        additional_kwargs: ``use_motion_module``, ``motion_module_resolutions``, ``motion_module_mid_block``,
            ``motion_module_decoder_only``, ``motion_module_kwargs`` (see ``inference_v2.yaml``).
    """

    def __init__(self, unet_config: Mapping[str, Any], additional_kwargs: Mapping[str, Any] | None = None):
        super().__init__()
        cfg = {k: v for k, v in unet_config.items() if not k.startswith("_")}
        extra = dict(additional_kwargs or {})
        self.config = cfg
        self.additional_kwargs = extra
        channels = list(cfg.get("block_out_channels", (320, 640, 1280, 1280)))
        layers = int(cfg.get("layers_per_block", 2))
        heads = cfg.get("attention_head_dim", 8)
        heads = [heads] * len(channels) if isinstance(heads, int) else list(heads)
        groups = int(cfg.get("norm_num_groups", 32))
        eps = float(cfg.get("norm_eps", 1e-5))
        act = cfg.get("act_fn", "silu")
        xdim = int(cfg.get("cross_attention_dim", 768))
        linear_proj = bool(cfg.get("use_linear_projection", False))
        down_types = cfg.get("down_block_types", ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"])
        up_types = cfg.get("up_block_types", ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)
        in_ch, out_ch = int(cfg.get("in_channels", 4)), int(cfg.get("out_channels", 4))
        use_motion = bool(extra.get("use_motion_module", True))
        resolutions = tuple(extra.get("motion_module_resolutions", (1, 2, 4, 8)))
        decoder_only = bool(extra.get("motion_module_decoder_only", False))
        mm_kwargs = dict(extra.get("motion_module_kwargs", {}))
        if extra.get("unet_use_temporal_attention") or extra.get("unet_use_cross_frame_attention"):
            raise ValueError("unet_use_temporal_attention / unet_use_cross_frame_attention are not used by V-Express")
        if extra.get("motion_module_type", "Vanilla") != "Vanilla":
            raise ValueError("only the Vanilla motion module is supported")

        temb_ch = channels[0] * 4
        self.conv_in = nn.Conv2d(in_ch, channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(channels[0], cfg.get("flip_sin_to_cos", True), cfg.get("freq_shift", 0))
        self.time_embedding = TimestepEmbedding(channels[0], temb_ch)

        self.down_blocks = nn.ModuleList()
        out = channels[0]
        for i, kind in enumerate(down_types):
            inp, out = out, channels[i]
            block_cls = _DOWN[kind]
            self.down_blocks.append(block_cls(
                in_channels=inp, out_channels=out, temb_channels=temb_ch, num_layers=layers, eps=eps, act=act,
                groups=groups, heads=heads[i], cross_attention_dim=xdim, add_downsample=i < len(channels) - 1,
                downsample_padding=int(cfg.get("downsample_padding", 1)),
                use_motion=use_motion and (2 ** i in resolutions) and not decoder_only,
                motion_kwargs=mm_kwargs, use_linear_projection=linear_proj,
            ))
        self.mid_block = UNetMidBlock3DCrossAttn(
            channels[-1], temb_ch, eps, act, groups, heads[-1], xdim, float(cfg.get("mid_block_scale_factor", 1)),
            use_motion and bool(extra.get("motion_module_mid_block", True)), mm_kwargs,
            use_linear_projection=linear_proj,
        )
        self.up_blocks = nn.ModuleList()
        rev_ch, rev_heads = list(reversed(channels)), list(reversed(heads))
        out = rev_ch[0]
        self.num_upsamplers = 0
        for i, kind in enumerate(up_types):
            final = i == len(channels) - 1
            prev, out = out, rev_ch[i]
            inp = rev_ch[min(i + 1, len(channels) - 1)]
            self.num_upsamplers += 0 if final else 1
            block_cls = _UP[kind]
            self.up_blocks.append(block_cls(
                in_channels=inp, out_channels=out, prev_output_channel=prev, temb_channels=temb_ch,
                num_layers=layers + 1, eps=eps, act=act, groups=groups, heads=rev_heads[i], cross_attention_dim=xdim,
                add_upsample=not final, use_motion=use_motion and (2 ** (len(channels) - 1 - i) in resolutions),
                motion_kwargs=mm_kwargs, use_linear_projection=linear_proj,
            ))
        self.conv_norm_out = nn.GroupNorm(groups, channels[0], eps=eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], out_ch, kernel_size=3, padding=1)

        for name, module in self.named_modules():
            if isinstance(module, TemporalBasicTransformerBlock):
                module.bank_key = name
        self.bank_keys = [n for n, m in self.named_modules() if isinstance(m, TemporalBasicTransformerBlock)]

    # ------------------------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        for module in self.modules():
            if isinstance(module, _Block):
                module.gradient_checkpointing = enabled

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int | float,
        *,
        audio_tokens: torch.Tensor | None = None,
        kps_features: torch.Tensor | None = None,
        reference: ReferenceBank | None = None,
        drop: DropMask | None = None,
        reference_attention_weight: float = 1.0,
        audio_attention_weight: float = 1.0,
    ) -> torch.Tensor:
        """Predict (v / epsilon, as trained) for ``sample``.

        Args:
            sample: noisy latents (B, C, F, h, w).
            timestep: scalar or (B,) timesteps.
            audio_tokens: (B, F, tokens, cross_attention_dim) projected audio, or None (audio dropped everywhere).
            kps_features: (B, C0, F, h, w) V-Kps guider output added after ``conv_in``, or None.
            reference: ReferenceNet bank with batch 1 (shared) or B, or None (reference dropped everywhere).
            drop: per-sample drop decisions; dropped conditions take the official unconditional path.
            reference_attention_weight / audio_attention_weight: scale of the two branches (official inference).

        Returns:
            (B, out_channels, F, h, w).
        """
        if sample.ndim != 5:
            raise ShapeError(f"latents must be (B, C, F, h, w), got shape {tuple(sample.shape)}")
        b, c, f, h, w = sample.shape
        if c != self.conv_in.in_channels:
            raise ShapeError(f"latents have {c} channels, the UNet expects {self.conv_in.in_channels}")
        if drop is not None and drop.batch_size != b:
            raise ShapeError(f"drop mask has {drop.batch_size} samples, latents have {b}")

        if audio_tokens is not None:
            if audio_tokens.ndim != 4 or audio_tokens.shape[:2] != (b, f):
                raise ShapeError(
                    f"audio tokens must be (B={b}, F={f}, tokens, dim), got {tuple(audio_tokens.shape)}; "
                    "give one window of audio per latent frame"
                )
            if drop is not None and bool(drop.audio.any()):
                keep = (~drop.audio).to(audio_tokens.dtype).view(b, 1, 1, 1)
                audio_tokens = audio_tokens * keep
            audio_tokens = audio_tokens.reshape(b * f, *audio_tokens.shape[2:])

        x = frames_to_batch(sample)
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], dtype=torch.int64 if isinstance(timestep, int) else torch.float64,
                                    device=sample.device)
        elif timestep.ndim == 0:
            timestep = timestep[None].to(sample.device)
        timestep = timestep.expand(b)
        emb = self.time_embedding(self.time_proj(timestep).to(dtype=self.dtype))
        emb = emb.repeat_interleave(f, dim=0)

        x = self.conv_in(x)
        if kps_features is not None:
            if kps_features.ndim != 5 or kps_features.shape[0] != b or kps_features.shape[2:] != (f, h, w) \
                    or kps_features.shape[1] != x.shape[1]:
                raise ShapeError(
                    f"kps features must be (B={b}, {x.shape[1]}, F={f}, {h}, {w}), got {tuple(kps_features.shape)}; "
                    "kps images must have 8x the latent size and one image per frame"
                )
            kps = kps_features
            if drop is not None and bool(drop.kps.any()):
                kps = kps * (~drop.kps).to(kps.dtype).view(b, 1, 1, 1, 1)
            x = x + frames_to_batch(kps).to(x.dtype)

        ctx = self._context(b, f, reference, drop, audio_tokens, reference_attention_weight, audio_attention_weight)

        skips: tuple = (x,)
        for block in self.down_blocks:
            x, res = block(x, emb, ctx)
            skips += res
        x = self.mid_block(x, emb, ctx)

        factor = 2 ** self.num_upsamplers
        forward_size = (h % factor != 0) or (w % factor != 0)
        for i, block in enumerate(self.up_blocks):
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            size = skips[-1].shape[2:] if (forward_size and i < len(self.up_blocks) - 1) else None
            x = block(x, res, emb, ctx, upsample_size=size)

        x = self.conv_out(self.conv_act(self.conv_norm_out(x)))
        return batch_to_frames(x, f)

    def _context(self, b: int, f: int, reference: ReferenceBank | None, drop: DropMask | None,
                 audio_tokens: torch.Tensor | None, w_ref: float, w_aud: float) -> DenoiseContext:
        rows = bank_rows = None
        if reference is not None:
            nref = reference.batch_size
            if nref not in (1, b):
                raise ShapeError(f"reference bank has batch {nref}; it must be 1 (shared) or the latent batch {b}")
            missing = [k for k in self.bank_keys if k not in reference.features]
            if missing:
                raise ShapeError(f"reference bank lacks features for {len(missing)} blocks, e.g. {missing[0]}")
            device = next(iter(reference.features.values())).device
            keep = torch.ones(b, dtype=torch.bool, device=device)
            if drop is not None:
                keep = ~drop.reference.to(device)
            rows = keep.nonzero().flatten()
            bank_rows = rows if nref == b else torch.zeros_like(rows)
            if rows.numel() == 0:
                reference = None
            else:
                # Project every block's reference keys/values here, once, outside any checkpointed region
                # (cached in the bank, so later calls with the same bank reuse them).
                for key in self.bank_keys:
                    reference.kv(key, self.get_submodule(key).attn1_5)
        return DenoiseContext(f, audio_tokens, reference, rows, bank_rows, float(w_ref), float(w_aud))
