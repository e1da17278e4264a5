"""AnimateDiff-v2 "Vanilla" temporal motion module, as used by V-Express (spec §1.4).

Frames interact only here. Layout of one module (state-dict names of ``mm_sd_v15_v2.ckpt``)::

    temporal_transformer.norm            GroupNorm(32, C, eps=1e-6), statistics per frame
    temporal_transformer.proj_in         Linear(C, C)
    temporal_transformer.transformer_blocks.0.attention_blocks.{0,1}   temporal self-attention (+ pos_encoder.pe)
    temporal_transformer.transformer_blocks.0.norms.{0,1}              LayerNorm before each attention
    temporal_transformer.transformer_blocks.0.ff / ff_norm             GEGLU feed-forward
    temporal_transformer.proj_out        Linear(C, C), zero-initialised (module starts as the identity)

Unlike diffusers' ``TransformerTemporalModel`` (which pools GroupNorm statistics over frames), the input norm is
per frame, as in the official code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vexpress.errors import ShapeError
from vexpress.models.attention import Attention, FeedForward, inference_chunk, merge_heads, split_heads


class PositionalEncoding(nn.Module):
    """Sinusoidal temporal position table, a persistent buffer ``pe`` of shape (1, max_len, C)."""

    def __init__(self, dim: int, max_len: int = 32):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(Attention):
    """Self-attention along the frame axis; the position encoding is added to its (normed) input."""

    def __init__(self, dim: int, heads: int, dim_head: int, max_len: int = 32, position_encoding: bool = True):
        super().__init__(dim, heads, dim_head)
        self.pos_encoder = PositionalEncoding(dim, max_len) if position_encoding else None

    def _attend_frames(self, x: torch.Tensor) -> torch.Tensor:
        """(N, f, c) sequences of frames -> (N, f, c)."""
        if self.pos_encoder is not None:
            x = self.pos_encoder(x)
        q, k, v = (split_heads(proj(x), self.heads) for proj in (self.to_q, self.to_k, self.to_v))
        return self.to_out[0](merge_heads(F.scaled_dot_product_attention(q, k, v)))

    def forward(self, hidden_states: torch.Tensor, video_length: int) -> torch.Tensor:  # type: ignore[override]
        bf, d, c = hidden_states.shape
        b = bf // video_length
        frames = hidden_states.view(b, video_length, d, c)
        # inference: spatial positions are independent sequences, so take them a chunk at a time (input copy, pos
        # encoding, q, k, v, attention output, merged heads, projection: ~8 (f, c) tensors per position)
        step = inference_chunk(b * d, 8 * video_length * c, hidden_states.device)
        if step is None:
            # (b f) d c -> (b d) f c
            x = frames.transpose(1, 2).reshape(b * d, video_length, c)
            out = self._attend_frames(x)
            # (b d) f c -> (b f) d c
            return out.view(b, d, video_length, c).transpose(1, 2).reshape(bf, d, c)
        out = hidden_states.new_empty(b, video_length, d, c)
        per_sample = max(1, step // b)
        for s in range(0, d, per_sample):
            e = min(d, s + per_sample)
            x = frames[:, :, s:e].transpose(1, 2).reshape(b * (e - s), video_length, c)
            out[:, :, s:e] = self._attend_frames(x).view(b, e - s, video_length, c).transpose(1, 2)
        return out.view(bf, d, c)


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, num_attention_blocks: int, max_len: int, pe: bool):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalAttention(dim, heads, dim_head, max_len, pe) for _ in range(num_attention_blocks)]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(num_attention_blocks)])
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, hidden_states: torch.Tensor, video_length: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            hidden_states = attention(norm(hidden_states), video_length) + hidden_states
        return self.ff(self.ff_norm(hidden_states)) + hidden_states


class TemporalTransformer3DModel(nn.Module):
    def __init__(
        self,
        channels: int,
        heads: int,
        num_layers: int,
        num_attention_blocks: int,
        max_len: int,
        position_encoding: bool,
        dim_div: int = 1,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        dim_head = channels // heads // dim_div
        inner = heads * dim_head
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [
                TemporalTransformerBlock(inner, heads, dim_head, num_attention_blocks, max_len, position_encoding)
                for _ in range(num_layers)
            ]
        )
        self.proj_out = nn.Linear(inner, channels)
        self._zero_out_key: tuple | None = None
        self._zero_out = False

    def is_frozen_identity(self) -> bool:
        """True when the module is exactly the identity and nothing in it trains: ``proj_out`` is all zeros and no
        parameter requires a gradient (the motion modules during the image stage, or a fresh network at inference).
        Its output is then its input, bit for bit, and :meth:`forward` skips the computation."""
        w, b = self.proj_out.weight, self.proj_out.bias
        if torch.compiler.is_compiling() or w.requires_grad or (b is not None and b.requires_grad):
            return False
        key = (w.data_ptr(), w._version, None if b is None else (b.data_ptr(), b._version))
        if key != self._zero_out_key:  # re-checked only after the weights changed (optimizer step, loading)
            self._zero_out_key = key
            self._zero_out = not bool(w.any()) and (b is None or not bool(b.any()))
        return self._zero_out and not any(p.requires_grad for p in self.parameters())

    def forward(self, x: torch.Tensor, video_length: int) -> torch.Tensor:
        """``x``: (B*F, C, H, W) frames with batch outermost; returns the same shape."""
        if self.is_frozen_identity():
            return x
        bf, c, h, w = x.shape
        residual = x
        hidden = self.norm(x).permute(0, 2, 3, 1).reshape(bf, h * w, c)
        hidden = self.proj_in(hidden)
        for block in self.transformer_blocks:
            hidden = block(hidden, video_length)
        hidden = self.proj_out(hidden)
        return hidden.reshape(bf, h, w, -1).permute(0, 3, 1, 2).contiguous() + residual


class VanillaTemporalModule(nn.Module):
    """One AnimateDiff motion module. ``forward(x, video_length)`` on (B*F, C, H, W) frames.

    Args:
        in_channels: feature channels C (a multiple of 32: the input GroupNorm has 32 groups).
        num_attention_heads: temporal attention heads (8 in V-Express).
        num_transformer_block: transformer blocks (1 in V-Express).
        attention_block_types: one entry per temporal self-attention (``("Temporal_Self", "Temporal_Self")``).
        temporal_position_encoding: add the sinusoidal frame position to each attention input.
        temporal_position_encoding_max_len: frames per window at most (32 in V-Express).
        temporal_attention_dim_div: divides the head width.
        zero_initialize: zero ``proj_out`` so that a fresh module is the identity.
    """

    def __init__(
        self,
        in_channels: int,
        num_attention_heads: int = 8,
        num_transformer_block: int = 1,
        attention_block_types: tuple[str, ...] | list[str] = ("Temporal_Self", "Temporal_Self"),
        temporal_position_encoding: bool = True,
        temporal_position_encoding_max_len: int = 32,
        temporal_attention_dim_div: int = 1,
        zero_initialize: bool = True,
        **unused: object,
    ):
        super().__init__()
        for kind in attention_block_types:
            if kind != "Temporal_Self":
                raise ValueError(f"motion module attention block type {kind!r} is not supported (Temporal_Self only)")
        if in_channels % 32:
            raise ValueError(f"motion module channels must be a multiple of 32 (GroupNorm(32)), got {in_channels}")
        self.max_frames = temporal_position_encoding_max_len if temporal_position_encoding else None
        self.temporal_transformer = TemporalTransformer3DModel(
            in_channels,
            num_attention_heads,
            num_transformer_block,
            len(attention_block_types),
            temporal_position_encoding_max_len,
            temporal_position_encoding,
            temporal_attention_dim_div,
        )
        if zero_initialize:
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, x: torch.Tensor, video_length: int) -> torch.Tensor:
        if self.max_frames is not None and video_length > self.max_frames:
            raise ShapeError(
                f"{video_length} frames in one window exceed the motion module's {self.max_frames} positions; "
                f"use context windows of at most {self.max_frames} frames"
            )
        return self.temporal_transformer(x, video_length)
