"""Attention and feed-forward layers with the official (diffusers-style) parameter names.

The layers keep the state-dict names of diffusers' ``Attention`` (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) and
``FeedForward`` (``net.0.proj``, ``net.2``) so official V-Express, Moore-AnimateAnyone and AnimateDiff checkpoints
load with strict key checking. The computation goes through :func:`torch.nn.functional.scaled_dot_product_attention`
(flash / memory-efficient kernels on CUDA, a fused kernel on CPU); numerically it equals the official
``AttnProcessor`` up to float32 reordering noise (~1e-6 relative).

Inference memory: without autograd, a layer whose intermediates would exceed :data:`INFERENCE_CHUNK_ELEMENTS`
processes its rows (frames, or tokens for the feed-forward) in chunks and writes them into one preallocated output,
so the peak holds one chunk of intermediates instead of all of them (the official code materialises the full 8C
GEGLU projection and every q/k/v of a window at once). Each row sees exactly the same arithmetic; with autograd
on (training) nothing is chunked.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

#: Intermediate elements above which inference (no autograd) splits a layer's rows into chunks (64 MB in fp32);
#: the environment variable ``VEXPRESS_INFERENCE_CHUNK_ELEMENTS`` overrides it (e.g. to test the chunked path).
INFERENCE_CHUNK_ELEMENTS = int(os.environ.get("VEXPRESS_INFERENCE_CHUNK_ELEMENTS", 1 << 24))
#: The same limit on CUDA; 0 (default) runs every layer at once there. The GPU figures in docs/gpu.md (3.2 frames/s,
#: 9.5 GB at 512x512 in bf16, flat in the audio length) were measured without chunking; its effect on CUDA speed
#: has not been measured, so it is opt-in there (``VEXPRESS_INFERENCE_CHUNK_ELEMENTS_CUDA``).
INFERENCE_CHUNK_ELEMENTS_CUDA = int(os.environ.get("VEXPRESS_INFERENCE_CHUNK_ELEMENTS_CUDA", 0))


def inference_chunk(rows: int, elements_per_row: int, device: torch.device | None = None) -> int | None:
    """Rows per chunk when ``rows`` rows of ``elements_per_row`` intermediate elements each should be split (no
    autograd and above the limit for ``device``); None to run them at once."""
    limit = INFERENCE_CHUNK_ELEMENTS
    if device is not None and device.type == "cuda":
        limit = INFERENCE_CHUNK_ELEMENTS_CUDA
    if limit <= 0 or torch.is_grad_enabled() or rows * elements_per_row <= limit or rows <= 1:
        return None
    return max(1, limit // max(1, elements_per_row))


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, L, heads*d) -> (N, heads, L, d)."""
    n, length, _ = x.shape
    return x.view(n, length, heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(N, heads, L, d) -> (N, L, heads*d)."""
    n, heads, length, d = x.shape
    return x.transpose(1, 2).reshape(n, length, heads * d)


class Attention(nn.Module):
    """Multi-head attention with bias-free q/k/v and a biased output projection (diffusers layout).

    Args:
        query_dim: channels of the queries (and of the output).
        heads: number of heads.
        dim_head: channels per head.
        cross_attention_dim: channels of the key/value context (``None``: self-attention, context = queries).
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int, cross_attention_dim: int | None = None):
        super().__init__()
        inner = heads * dim_head
        kv_dim = cross_attention_dim if cross_attention_dim is not None else query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(kv_dim, inner, bias=False)
        self.to_v = nn.Linear(kv_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Dropout(0.0)])

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of ``context`` (N, L, kv_dim), split into heads: two (N, heads, L, d) tensors."""
        return split_heads(self.to_k(context), self.heads), split_heads(self.to_v(context), self.heads)

    def attend(self, hidden_states: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention of queries from ``hidden_states`` (N, Lq, C) over pre-projected ``k``/``v`` (N, heads, Lk, d)."""
        q = split_heads(self.to_q(hidden_states), self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](merge_heads(out))

    def _forward(self, hidden_states: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        k, v = self.project_kv(hidden_states if context is None else context)
        return self.attend(hidden_states, k, v)

    def forward(self, hidden_states: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        n, length, _ = hidden_states.shape
        inner = self.to_q.out_features
        # q, k, v, attention output, merged heads, projected output: ~6 tensors of (L, inner) per row
        step = inference_chunk(n, 6 * length * inner, hidden_states.device)
        if step is None or (context is not None and context.shape[0] != n):
            return self._forward(hidden_states, context)
        out = hidden_states.new_empty(n, length, self.to_out[0].out_features)
        for s in range(0, n, step):
            ctx = None if context is None else context[s:s + step]
            out[s:s + step] = self._forward(hidden_states[s:s + step], ctx)
        return out


class GEGLU(nn.Module):
    """Gated GELU projection: ``a * gelu(b)`` with ``[a, b] = proj(x)`` (diffusers ``GEGLU``)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        if torch.is_grad_enabled():
            return hidden * F.gelu(gate)
        return F.gelu(gate).mul_(hidden)  # inference: one 4C tensor less


class FeedForward(nn.Module):
    """SD's transformer FFN: GEGLU to ``mult*dim``, then a linear back to ``dim`` (keys ``net.0.proj``, ``net.2``)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        inner = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim)])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = self.net[2].in_features
        rows = x.numel() // x.shape[-1]
        step = inference_chunk(rows, 4 * inner, x.device)  # GEGLU projection (2 inner), GELU output, product
        if step is None:
            return self._forward(x)
        flat = x.reshape(rows, x.shape[-1])
        out = x.new_empty(rows, self.net[2].out_features)
        for s in range(0, rows, step):
            out[s:s + step] = self._forward(flat[s:s + step])
        return out.view(*x.shape[:-1], out.shape[-1])
