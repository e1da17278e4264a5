"""Audio projection (spec §1.7): a perceiver resampler turning each frame's window of audio features into tokens.

Input (N, 10, D): for every video frame, 2 audio feature vectors per frame over frames i-2..i+2 (see
:mod:`vexpress.audio.windows`). Output (N, 5, output_dim): the keys/values of that frame's audio cross-attention.
Keys match the official ``audio_projection.bin`` (IP-Adapter-Plus ``Resampler`` layout).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vexpress.errors import ShapeError


class PerceiverAttention(nn.Module):
    """Latents attend to ``concat(features, latents)``; q/k scaled by 1/sqrt(sqrt(d)) each, softmax in float32."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8):
        super().__init__()
        inner = dim_head * heads
        self.dim_head, self.heads = dim_head, heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, length, _ = x.shape
        return x.view(n, length, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        latents = self.norm2(latents)
        n, length, _ = latents.shape
        q = self._heads(self.to_q(latents))
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        k, v = self._heads(k), self._heads(v)
        scale = 1.0 / math.sqrt(math.sqrt(self.dim_head))
        weight = (q * scale) @ (k * scale).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        out = (weight @ v).permute(0, 2, 1, 3).reshape(n, length, -1)
        return self.to_out(out)


def _feed_forward(dim: int, mult: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class AudioProjection(nn.Module):
    """Args (official names):
    dim: latent width (768 in the release; not tied to the UNet's cross-attention width).
    depth: perceiver layers. dim_head / heads: attention geometry. num_queries: output tokens per frame (5).
    embedding_dim: audio feature width D (768 for wav2vec2-base). output_dim: token width (the UNet's
    ``cross_attention_dim``). ff_mult: feed-forward expansion. max_seq_len: input tokens per frame at most (10).
    """

    def __init__(self, dim: int = 768, depth: int = 4, dim_head: int = 64, heads: int = 12, num_queries: int = 5,
                 embedding_dim: int = 768, output_dim: int = 768, ff_mult: int = 4, max_seq_len: int = 10,
                 num_latents_mean_pooled: int = 0):
        super().__init__()
        if num_latents_mean_pooled:
            raise ValueError("num_latents_mean_pooled is not used by V-Express and not supported")
        self.embedding_dim, self.max_seq_len, self.num_queries, self.output_dim = (
            embedding_dim, max_seq_len, num_queries, output_dim)
        self.pos_emb = nn.Embedding(max_seq_len, embedding_dim)
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            [nn.ModuleList([PerceiverAttention(dim, dim_head, heads), _feed_forward(dim, ff_mult)])
             for _ in range(depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L<=max_seq_len, embedding_dim) -> (N, num_queries, output_dim)."""
        if x.ndim != 3 or x.shape[-1] != self.embedding_dim or x.shape[1] > self.max_seq_len:
            raise ShapeError(
                f"audio windows must be (N, <= {self.max_seq_len}, {self.embedding_dim}), got {tuple(x.shape)}; "
                "check that the audio encoder matches the model's audio_projection.embedding_dim"
            )
        x = x.to(self.proj_in.weight.dtype)
        x = x + self.pos_emb(torch.arange(x.shape[1], device=x.device))
        latents = self.latents.repeat(x.shape[0], 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))
