"""Per-frame spatial transformer of the denoising UNet (spec §1.4, §2 read mode).

Each block runs, with a residual around every step:

1. ``attn1``: self-attention over one frame's tokens;
2. ``attn1_5``: reference attention, queries from the frame, keys/values only from the ReferenceNet bank of the
   block with the same module name, scaled by ``reference_attention_weight``;
3. ``attn2``: audio cross-attention over that frame's audio tokens, scaled by ``audio_attention_weight``;
4. ``ff``: GEGLU feed-forward.

The bank is the same for all frames of a sample, so the reference attention folds the frames into the query axis
(``(B, F*N)`` queries against ``(B, L)`` keys) instead of repeating the bank per frame as the official code does:
the softmax of each query is unchanged, the bank's keys/values are projected once (and cached in the bank).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vexpress.models.attention import Attention, FeedForward, inference_chunk, merge_heads, split_heads
from vexpress.models.conditioning import DenoiseContext


class TemporalBasicTransformerBlock(nn.Module):
    """The official block (name kept for the checkpoint layout). ``bank_key`` is its module path in the UNet."""

    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int):
        super().__init__()
        self.bank_key = ""
        self.attn1 = Attention(dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.attn1_5 = Attention(dim, heads, dim_head)
        self.norm1_5 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, dim_head, cross_attention_dim=cross_attention_dim)
        nn.init.zeros_(self.attn2.to_out[0].weight)  # official: audio attention starts silent
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)
        self.norm3 = nn.LayerNorm(dim)

    def reference_attention(self, hidden: torch.Tensor, ctx: DenoiseContext) -> torch.Tensor:
        """``attn1_5`` over the reference bank; samples without a reference get the output bias (exact)."""
        bf, n, c = hidden.shape
        f = ctx.video_length
        b = bf // f
        bias = self.attn1_5.to_out[0].bias
        if ctx.reference is None or ctx.reference_rows is None or ctx.reference_rows.numel() == 0:
            return bias.to(hidden.dtype).expand(bf, n, c)
        k, v = ctx.reference.kv(self.bank_key, self.attn1_5)  # (Bref, heads, L, d)
        rows, bank_rows = ctx.reference_rows, ctx.bank_rows
        all_rows = rows.numel() == b
        queries = hidden.view(b, f * n, c)
        if not all_rows:
            queries = queries.index_select(0, rows)
        if k.shape[0] == 1:  # one reference for the whole batch (inference): broadcast, no copy
            k = k.expand(queries.shape[0], -1, -1, -1)
            v = v.expand(queries.shape[0], -1, -1, -1)
        elif not (all_rows and k.shape[0] == b):  # one reference per sample, some samples dropped
            k, v = k.index_select(0, bank_rows), v.index_select(0, bank_rows)
        attn = self.attn1_5
        nq, lq = queries.shape[:2]
        # inference: queries are independent given the shared keys/values, so take the (frames x tokens) query axis
        # a chunk at a time (q, attention output, merged heads, projection: ~4 tensors of (rows, C) per token)
        step = inference_chunk(lq, 4 * nq * attn.to_q.out_features, queries.device)
        if step is None:
            q = split_heads(attn.to_q(queries), attn.heads)
            out = attn.to_out[0](merge_heads(F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype))))
        else:
            out = queries.new_empty(nq, lq, attn.to_out[0].out_features)
            k, v = k.to(queries.dtype), v.to(queries.dtype)
            for s in range(0, lq, step):
                q = split_heads(attn.to_q(queries[:, s:s + step]), attn.heads)
                out[:, s:s + step] = attn.to_out[0](merge_heads(F.scaled_dot_product_attention(q, k, v)))
        if not all_rows:
            full = bias.to(out.dtype).expand(b, f * n, c).contiguous()
            out = full.index_copy(0, rows, out) if torch.is_grad_enabled() else full.index_copy_(0, rows, out)
        return out.view(bf, n, c)

    def forward(self, hidden: torch.Tensor, ctx: DenoiseContext) -> torch.Tensor:
        hidden = self.attn1(self.norm1(hidden)) + hidden
        ref = self.reference_attention(self.norm1_5(hidden), ctx)
        if ctx.reference_attention_weight != 1.0:
            ref = ref * ctx.reference_attention_weight
        hidden = ref + hidden
        normed = self.norm2(hidden)
        if ctx.audio_tokens is None:
            aud = self.attn2.to_out[0].bias.to(hidden.dtype).expand_as(hidden)
        else:
            aud = self.attn2(normed, ctx.audio_tokens.to(normed.dtype))
        if ctx.audio_attention_weight != 1.0:
            aud = aud * ctx.audio_attention_weight
        hidden = aud + hidden
        return self.ff(self.norm3(hidden)) + hidden


class Transformer3DModel(nn.Module):
    """GroupNorm -> 1x1 conv -> transformer block(s) -> 1x1 conv, with a residual; every frame separately."""

    def __init__(self, heads: int, dim_head: int, in_channels: int, num_layers: int, norm_num_groups: int,
                 cross_attention_dim: int, use_linear_projection: bool = False):
        super().__init__()
        inner = heads * dim_head
        self.use_linear_projection = use_linear_projection
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        if use_linear_projection:
            self.proj_in = nn.Linear(in_channels, inner)
        else:
            self.proj_in = nn.Conv2d(in_channels, inner, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [TemporalBasicTransformerBlock(inner, heads, dim_head, cross_attention_dim) for _ in range(num_layers)]
        )
        if use_linear_projection:
            self.proj_out = nn.Linear(inner, in_channels)
        else:
            self.proj_out = nn.Conv2d(inner, in_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, ctx: DenoiseContext) -> torch.Tensor:
        """``x``: (B*F, C, H, W)."""
        bf, c, h, w = x.shape
        residual = x
        hidden = self.norm(x)
        if self.use_linear_projection:
            hidden = self.proj_in(hidden.permute(0, 2, 3, 1).reshape(bf, h * w, c))
        else:
            hidden = self.proj_in(hidden)
            hidden = hidden.permute(0, 2, 3, 1).reshape(bf, h * w, hidden.shape[1])
        for block in self.transformer_blocks:
            hidden = block(hidden, ctx)
        inner = hidden.shape[-1]
        if self.use_linear_projection:
            hidden = self.proj_out(hidden).reshape(bf, h, w, c).permute(0, 3, 1, 2).contiguous()
        else:
            hidden = self.proj_out(hidden.reshape(bf, h, w, inner).permute(0, 3, 1, 2).contiguous())
        return hidden + residual
