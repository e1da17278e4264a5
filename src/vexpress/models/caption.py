"""A frozen caption encoder: the embedded foundation's stand-in for SD1.5's CLIP text encoder.

SD1.5's cross-attention (``attn2``) was trained against captions, so its queries learned to pick the regions that a
caption's words describe, and V-Express's audio attention starts from those q/k/v (through Moore-AnimateAnyone).
The embedded foundation can do the same only if it has captions to train ``attn2`` on. Synthetic frames have no
text, but they have exact per-frame attributes (:func:`vexpress.data.captions.frame_captions`), and a caption here
is those attribute values, one *word* (token) per attribute.

The encoder is a fixed function, never trained (as the CLIP text encoder is frozen in SD's training): token ``a`` of
a frame is ``word_a + W_a @ fourier(x_a)``, with ``word_a`` and ``W_a`` drawn once from ``seed`` and
``fourier(x) = [sin(pi 2^k x), cos(pi 2^k x)]`` for ``k < frequencies``. Nothing of it is saved with the network:
the same ``(attributes, dim, frequencies, seed)`` rebuild the same encoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vexpress.errors import ShapeError


class CaptionEncoder(nn.Module):
    """(…, A) attribute values -> (…, A, dim) caption tokens; frozen and deterministic.

    Args:
        attributes: values per frame (A): one token each.
        dim: token width (the denoiser's ``cross_attention_dim``).
        frequencies: Fourier frequencies per value (``pi * 2^k``, ``k < frequencies``).
        seed: seed of the fixed word vectors and projections.
    """

    def __init__(self, attributes: int, dim: int, frequencies: int = 4, seed: int = 0):
        super().__init__()
        if attributes < 1 or dim < 1 or frequencies < 1:
            raise ValueError("a caption encoder needs attributes, dim and frequencies >= 1")
        self.attributes, self.dim, self.frequencies, self.seed = int(attributes), int(dim), int(frequencies), int(seed)
        g = torch.Generator().manual_seed(self.seed)
        feats = 2 * self.frequencies
        # unit-variance tokens: the word and the value's part each carry half of it
        self.register_buffer("words", torch.randn(self.attributes, self.dim, generator=g) / math.sqrt(2.0),
                             persistent=False)
        self.register_buffer("proj", torch.randn(self.attributes, feats, self.dim, generator=g) / math.sqrt(feats),
                             persistent=False)
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(self.frequencies, dtype=torch.float32),
                             persistent=False)
        self.requires_grad_(False)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        if values.shape[-1] != self.attributes:
            raise ShapeError(f"captions have {values.shape[-1]} attributes per frame; this encoder reads "
                             f"{self.attributes}")
        x = values.to(self.freqs.dtype).unsqueeze(-1) * self.freqs  # (..., A, K)
        fourier = torch.cat((x.sin(), x.cos()), dim=-1)  # (..., A, 2K)
        return self.words + torch.einsum("...af,afd->...ad", fourier, self.proj)

    def extra_repr(self) -> str:
        return f"attributes={self.attributes}, dim={self.dim}, frequencies={self.frequencies}, seed={self.seed}"
