"""V-Kps guider (spec §1.5): a small per-frame conv net, V-Kps images (B,3,F,H,W) in [0,1] -> (B,C0,F,H/8,W/8).

Its output is added to the denoiser's ``conv_in`` output and nowhere else. ``conv_out`` is zero-initialised, so an
untrained guider contributes nothing. Keys: ``conv_in``, ``blocks.0..5``, ``conv_out`` (as Moore's PoseGuider).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vexpress.errors import ShapeError
from vexpress.models.unet_3d_condition import batch_to_frames, frames_to_batch


class VKpsGuider(nn.Module):
    """Args:
    conditioning_embedding_channels: output channels (the UNet's first block width, 320 for SD1.5).
    conditioning_channels: input channels (3: the RGB V-Kps drawing).
    block_out_channels: widths of the stages; every stage after the first halves the resolution.
    """

    def __init__(self, conditioning_embedding_channels: int, conditioning_channels: int = 3,
                 block_out_channels: Sequence[int] = (16, 32, 96, 256)):
        super().__init__()
        ch = list(block_out_channels)
        self.conditioning_channels = conditioning_channels
        self.conv_in = nn.Conv2d(conditioning_channels, ch[0], kernel_size=3, padding=1)
        blocks = []
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(ch[-1], conditioning_embedding_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.downscale = 2 ** (len(ch) - 1)  # image pixels per output pixel

    def forward(self, kps_images: torch.Tensor) -> torch.Tensor:
        if kps_images.ndim != 5 or kps_images.shape[1] != self.conditioning_channels:
            raise ShapeError(
                f"kps images must be (B, {self.conditioning_channels}, F, H, W) in [0, 1], "
                f"got {tuple(kps_images.shape)}"
            )
        f = kps_images.shape[2]
        x = F.silu(self.conv_in(frames_to_batch(kps_images).to(self.conv_in.weight.dtype)))
        for block in self.blocks:
            x = F.silu(block(x))
        return batch_to_frames(self.conv_out(x), f)
