"""Tiny real extractors the metric tests build and save themselves (no downloaded weights anywhere)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class TinyImageExtractor(nn.Module):
    """Seeded small CNN: uint8 (N, 3, H, W) -> (N, 16) features (FID's custom-extractor contract)."""

    num_features = 16

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        x = imgs.float() / 127.5 - 1.0
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        x = torch.tanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return x.mean(dim=(2, 3))


class TinyI3D(nn.Module):
    """Seeded 3D CNN with StyleGAN-V's I3D call signature; returns (N, 400) "logits averaged over time"."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv3d(3, 8, kernel_size=(3, 5, 5), stride=(2, 4, 4), padding=(1, 2, 2))
        self.head = nn.Linear(8, 400)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = True) -> torch.Tensor:
        x = x.float()
        if rescale:
            x = x / 255.0 * 2.0 - 1.0
        if resize:
            n, c, t, h, w = x.shape
            x = F.interpolate(x, size=(t, 224, 224), mode="trilinear", align_corners=False)
        assert x.shape[-1] == 224 and x.shape[-2] == 224, "feed 224x224 frames when resize=False"
        feat = torch.relu(self.conv(x))  # (N, 8, T', h, w)
        feat = feat.mean(dim=(3, 4)).transpose(1, 2)  # (N, T', 8)
        logits = self.head(feat).mean(dim=1)
        if return_features:
            return logits
        return torch.softmax(logits, dim=-1)


def save_tiny_i3d(path: Path, seed: int = 0) -> Path:
    scripted = torch.jit.script(TinyI3D(seed).eval())
    torch.jit.save(scripted, str(path))
    return path


class TinyArcFace(nn.Module):
    """Seeded CNN with the ArcFace contract: (N, 3, 112, 112) RGB in [-1, 1] -> (N, 32) embeddings."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 32, 8, stride=8)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)).mean(dim=(2, 3))


def save_tiny_arcface(path: Path, seed: int = 0) -> Path:
    torch.jit.save(torch.jit.script(TinyArcFace(seed).eval()), str(path))
    return path
