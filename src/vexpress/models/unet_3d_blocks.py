"""Down/mid/up blocks of the denoising UNet (AnimateDiff layout, spec §1.4).

Everything but the motion modules works on frames flattened into the batch, ``(B*F, C, H, W)`` with the batch
outermost, so the resnets, samplers and spatial transformers are diffusers' 2D layers (or ours with the same
names). Placement of the motion modules: in attention blocks ``resnet -> spatial transformer -> motion``; in the
resnet-only blocks ``resnet -> motion``; in the mid block ``resnet0 -> [transformer -> motion -> resnet1]``.
"""

from __future__ import annotations

from typing import Callable

import torch
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from torch import nn
from torch.utils.checkpoint import checkpoint

from vexpress.models.conditioning import DenoiseContext
from vexpress.models.motion_module import VanillaTemporalModule
from vexpress.models.transformer_3d import Transformer3DModel


def _resnet(in_ch: int, out_ch: int, temb: int, eps: float, groups: int, act: str, scale: float = 1.0) -> ResnetBlock2D:
    return ResnetBlock2D(
        in_channels=in_ch,
        out_channels=out_ch,
        temb_channels=temb,
        eps=eps,
        groups=groups,
        dropout=0.0,
        time_embedding_norm="default",
        non_linearity=act,
        output_scale_factor=scale,
        pre_norm=True,
    )


def _motion(channels: int, use: bool, kwargs: dict) -> VanillaTemporalModule | None:
    return VanillaTemporalModule(channels, **kwargs) if use else None


class _Block(nn.Module):
    """Gradient-checkpointing switch shared by all blocks."""

    gradient_checkpointing = False

    def _run(self, fn: Callable[..., torch.Tensor], *args: object) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def _layer(self, resnet: nn.Module, attn: nn.Module | None, motion: nn.Module | None, x: torch.Tensor,
               temb: torch.Tensor, ctx: DenoiseContext) -> torch.Tensor:
        x = self._run(resnet, x, temb)
        if attn is not None:
            x = self._run(attn, x, ctx)
        if motion is not None:
            x = self._run(motion, x, ctx.video_length)
        return x


class CrossAttnDownBlock3D(_Block):
    has_cross_attention = True

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int, eps: float,
                 act: str, groups: int, heads: int, cross_attention_dim: int, add_downsample: bool,
                 downsample_padding: int, use_motion: bool, motion_kwargs: dict, use_linear_projection: bool = False):
        super().__init__()
        self.resnets = nn.ModuleList(
            [_resnet(in_channels if i == 0 else out_channels, out_channels, temb_channels, eps, groups, act)
             for i in range(num_layers)]
        )
        self.attentions = nn.ModuleList(
            [Transformer3DModel(heads, out_channels // heads, out_channels, 1, groups, cross_attention_dim,
                                use_linear_projection) for _ in range(num_layers)]
        )
        self.motion_modules = nn.ModuleList(
            [_motion(out_channels, use_motion, motion_kwargs) for _ in range(num_layers)]
        )
        self.downsamplers = (
            nn.ModuleList([Downsample2D(out_channels, use_conv=True, out_channels=out_channels,
                                        padding=downsample_padding, name="op")])
            if add_downsample else None
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor, ctx: DenoiseContext):
        outputs = ()
        for resnet, attn, motion in zip(self.resnets, self.attentions, self.motion_modules):
            x = self._layer(resnet, attn, motion, x, temb, ctx)
            outputs += (x,)
        if self.downsamplers is not None:
            for down in self.downsamplers:
                x = down(x)
            outputs += (x,)
        return x, outputs


class DownBlock3D(_Block):
    has_cross_attention = False

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int, num_layers: int, eps: float,
                 act: str, groups: int, add_downsample: bool, downsample_padding: int, use_motion: bool,
                 motion_kwargs: dict, **unused: object):
        super().__init__()
        self.resnets = nn.ModuleList(
            [_resnet(in_channels if i == 0 else out_channels, out_channels, temb_channels, eps, groups, act)
             for i in range(num_layers)]
        )
        self.motion_modules = nn.ModuleList(
            [_motion(out_channels, use_motion, motion_kwargs) for _ in range(num_layers)]
        )
        self.downsamplers = (
            nn.ModuleList([Downsample2D(out_channels, use_conv=True, out_channels=out_channels,
                                        padding=downsample_padding, name="op")])
            if add_downsample else None
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor, ctx: DenoiseContext):
        outputs = ()
        for resnet, motion in zip(self.resnets, self.motion_modules):
            x = self._layer(resnet, None, motion, x, temb, ctx)
            outputs += (x,)
        if self.downsamplers is not None:
            for down in self.downsamplers:
                x = down(x)
            outputs += (x,)
        return x, outputs


class UNetMidBlock3DCrossAttn(_Block):
    def __init__(self, in_channels: int, temb_channels: int, eps: float, act: str, groups: int, heads: int,
                 cross_attention_dim: int, output_scale_factor: float, use_motion: bool, motion_kwargs: dict,
                 num_layers: int = 1, use_linear_projection: bool = False):
        super().__init__()
        self.resnets = nn.ModuleList(
            [_resnet(in_channels, in_channels, temb_channels, eps, groups, act, output_scale_factor)
             for _ in range(num_layers + 1)]
        )
        self.attentions = nn.ModuleList(
            [Transformer3DModel(heads, in_channels // heads, in_channels, 1, groups, cross_attention_dim,
                                use_linear_projection) for _ in range(num_layers)]
        )
        self.motion_modules = nn.ModuleList(
            [_motion(in_channels, use_motion, motion_kwargs) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor, temb: torch.Tensor, ctx: DenoiseContext) -> torch.Tensor:
        x = self._run(self.resnets[0], x, temb)
        for attn, resnet, motion in zip(self.attentions, self.resnets[1:], self.motion_modules):
            x = self._run(attn, x, ctx)
            if motion is not None:
                x = self._run(motion, x, ctx.video_length)
            x = self._run(resnet, x, temb)
        return x


class CrossAttnUpBlock3D(_Block):
    has_cross_attention = True

    def __init__(self, in_channels: int, out_channels: int, prev_output_channel: int, temb_channels: int,
                 num_layers: int, eps: float, act: str, groups: int, heads: int, cross_attention_dim: int,
                 add_upsample: bool, use_motion: bool, motion_kwargs: dict, use_linear_projection: bool = False):
        super().__init__()
        resnets, attentions = [], []
        for i in range(num_layers):
            skip = in_channels if i == num_layers - 1 else out_channels
            res_in = prev_output_channel if i == 0 else out_channels
            resnets.append(_resnet(res_in + skip, out_channels, temb_channels, eps, groups, act))
            attentions.append(Transformer3DModel(heads, out_channels // heads, out_channels, 1, groups,
                                                 cross_attention_dim, use_linear_projection))
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList(attentions)
        self.motion_modules = nn.ModuleList(
            [_motion(out_channels, use_motion, motion_kwargs) for _ in range(num_layers)])
        self.upsamplers = (
            nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
            if add_upsample else None
        )

    def forward(self, x: torch.Tensor, skips: tuple, temb: torch.Tensor, ctx: DenoiseContext,
                upsample_size: tuple | None = None) -> torch.Tensor:
        for resnet, attn, motion in zip(self.resnets, self.attentions, self.motion_modules):
            x = torch.cat([x, skips[-1]], dim=1)
            skips = skips[:-1]
            x = self._layer(resnet, attn, motion, x, temb, ctx)
        if self.upsamplers is not None:
            for up in self.upsamplers:
                x = up(x, output_size=upsample_size)
        return x


class UpBlock3D(_Block):
    has_cross_attention = False

    def __init__(self, in_channels: int, out_channels: int, prev_output_channel: int, temb_channels: int,
                 num_layers: int, eps: float, act: str, groups: int, add_upsample: bool, use_motion: bool,
                 motion_kwargs: dict, **unused: object):
        super().__init__()
        resnets = []
        for i in range(num_layers):
            skip = in_channels if i == num_layers - 1 else out_channels
            res_in = prev_output_channel if i == 0 else out_channels
            resnets.append(_resnet(res_in + skip, out_channels, temb_channels, eps, groups, act))
        self.resnets = nn.ModuleList(resnets)
        self.motion_modules = nn.ModuleList(
            [_motion(out_channels, use_motion, motion_kwargs) for _ in range(num_layers)])
        self.upsamplers = (
            nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
            if add_upsample else None
        )

    def forward(self, x: torch.Tensor, skips: tuple, temb: torch.Tensor, ctx: DenoiseContext,
                upsample_size: tuple | None = None) -> torch.Tensor:
        for resnet, motion in zip(self.resnets, self.motion_modules):
            x = torch.cat([x, skips[-1]], dim=1)
            skips = skips[:-1]
            x = self._layer(resnet, None, motion, x, temb, ctx)
        if self.upsamplers is not None:
            for up in self.upsamplers:
                x = up(x, output_size=upsample_size)
        return x
