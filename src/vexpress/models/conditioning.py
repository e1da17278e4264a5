"""Condition containers: per-sample drop masks, the reference feature bank, and the per-forward context.

These are plain data holders with no randomness inside, so the network stays deterministic: the decision *which*
conditions to drop is taken outside (the ``ConditionDropout`` callback in training, classifier-free guidance in the
pipeline) and passed in as a :class:`DropMask`.

Dropping follows the official unconditional path exactly (spec §4.1, parity README "uncond"):
- keypoints: the guider features are zeroed;
- audio: the projected audio tokens are zeroed, so audio attention returns its output bias;
- reference: the reference attention sees an all-zero bank, i.e. it returns its output bias. We return the bias
  without computing the attention at all (same numbers, no work).
Unlike the official ``reference_drop_rate`` (re-drawn per block and per frame), one decision holds for a whole
sample: every frame and every layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vexpress.errors import ShapeError


@dataclass
class DropMask:
    """Per-sample booleans (shape (B,)): ``True`` means the condition is dropped for that sample."""

    reference: torch.Tensor
    kps: torch.Tensor
    audio: torch.Tensor

    def __post_init__(self) -> None:
        shapes = {self.reference.shape, self.kps.shape, self.audio.shape}
        if len(shapes) != 1 or self.reference.ndim != 1:
            raise ShapeError(f"DropMask fields must be 1-D with one entry per sample, got shapes {sorted(shapes)}")
        self.reference = self.reference.bool()
        self.kps = self.kps.bool()
        self.audio = self.audio.bool()

    @property
    def batch_size(self) -> int:
        return int(self.reference.shape[0])

    @classmethod
    def none(cls, batch_size: int, device: torch.device | str | None = None) -> "DropMask":
        """Keep every condition."""
        z = torch.zeros(batch_size, dtype=torch.bool, device=device)
        return cls(z, z.clone(), z.clone())

    @classmethod
    def all(cls, batch_size: int, device: torch.device | str | None = None) -> "DropMask":
        """Drop every condition (the unconditional branch of classifier-free guidance)."""
        o = torch.ones(batch_size, dtype=torch.bool, device=device)
        return cls(o, o.clone(), o.clone())

    @classmethod
    def cat(cls, masks: list["DropMask"]) -> "DropMask":
        return cls(
            torch.cat([m.reference for m in masks]),
            torch.cat([m.kps for m in masks]),
            torch.cat([m.audio for m in masks]),
        )

    def to(self, device: torch.device | str) -> "DropMask":
        return DropMask(self.reference.to(device), self.kps.to(device), self.audio.to(device))


@dataclass
class ReferenceBank:
    """ReferenceNet features of one batch of reference images, keyed by transformer-block name.

    ``features[name]`` is the norm2 output after self-attention of that ReferenceNet block, shape (Bref, L, C).
    The denoiser's block with the same name attends to it. Keys and values of each block's reference attention are
    computed on first use and cached here, so they are computed once per reference image and reused across frames,
    context windows and denoising steps. Make a new bank whenever the reference attention weights change
    (training does, every step).
    """

    features: dict[str, torch.Tensor]
    _kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def batch_size(self) -> int:
        return int(next(iter(self.features.values())).shape[0])

    def kv(self, name: str, attn: "torch.nn.Module") -> tuple[torch.Tensor, torch.Tensor]:
        if name not in self._kv:
            if name not in self.features:
                raise KeyError(f"reference bank has no features for block {name!r}")
            self._kv[name] = attn.project_kv(self.features[name])
        return self._kv[name]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "ReferenceBank":
        return ReferenceBank({k: v.to(device=device, dtype=dtype) for k, v in self.features.items()})

    def detach(self) -> "ReferenceBank":
        return ReferenceBank({k: v.detach() for k, v in self.features.items()})


@dataclass
class DenoiseContext:
    """What every spatial transformer block of the denoiser needs besides its input (built by the UNet)."""

    video_length: int
    audio_tokens: torch.Tensor | None  # (B*F, tokens, D) or None (no audio: attention gives its bias)
    reference: ReferenceBank | None  # None: every sample's reference is dropped
    reference_rows: torch.Tensor | None  # (R,) indices of samples that attend to the reference
    bank_rows: torch.Tensor | None  # (R,) matching rows of the bank
    reference_attention_weight: float = 1.0
    audio_attention_weight: float = 1.0
