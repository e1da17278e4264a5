"""Classifier-free guidance with one scale for the whole condition set, or separate scales for audio and the rest.

Branches are batched into ONE denoiser call, each branch being a :class:`~vexpress.models.DropMask` row:

=============  ==================================  ============================================================
branch         dropped                             meaning
=============  ==================================  ============================================================
``uncond``     reference, keypoints, audio         official unconditional branch (spec §5.2: zero kps, zero
                                                   audio, zero reference -> attention biases only)
``no_audio``   audio                               reference + keypoints, silent
``cond``       nothing                             every condition
=============  ==================================  ============================================================

With ``s`` = ``guidance_scale`` and ``a`` = ``audio_guidance_scale``::

    pred = uncond + s * (no_audio - uncond) + a * (cond - no_audio)

With ``a == s`` this is the official ``uncond + s * (cond - uncond)`` and only two branches run; with ``s == 1``
the ``uncond`` branch is not needed (``no_audio + a * (cond - no_audio)``). As in the official pipeline,
``guidance_scale <= 1`` with no separate audio scale turns guidance off (the conditional branch alone).
The attention weights (``reference_attention_weight``, ``audio_attention_weight``) apply to every branch, as the
official code applies them to both CFG halves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vexpress.errors import InputError

#: (reference, kps, audio) dropped?
BRANCH_DROPS = {
    "uncond": (True, True, True),
    "no_audio": (False, False, True),
    "cond": (False, False, False),
}


@dataclass(frozen=True)
class Guidance:
    """Guidance scales.

    Attributes:
        scale: classifier-free guidance scale of all conditions together (official ``guidance_scale``, 3.5).
        audio_scale: separate scale for the audio condition; ``None`` = same as ``scale`` (official behaviour).
    """

    scale: float = 3.5
    audio_scale: float | None = None

    def __post_init__(self) -> None:
        for name, value in (("guidance_scale", self.scale), ("audio_guidance_scale", self.audio_scale)):
            if value is not None and not (value == value and abs(value) < 1e6):  # NaN / absurd
                raise InputError(f"{name} must be a finite number, got {value}")

    @property
    def effective_audio_scale(self) -> float:
        return self.scale if self.audio_scale is None else float(self.audio_scale)

    @property
    def branches(self) -> tuple[str, ...]:
        """Branch names in batch order."""
        s, a = float(self.scale), self.effective_audio_scale
        if a == s:
            return ("cond",) if s <= 1.0 else ("uncond", "cond")
        if s == 1.0:
            return ("no_audio", "cond")
        return ("uncond", "no_audio", "cond")

    def drop_mask(self, device: torch.device | str | None = None):
        """The :class:`~vexpress.models.DropMask` of the batched branches."""
        from vexpress.models.conditioning import DropMask

        rows = [BRANCH_DROPS[b] for b in self.branches]
        ref, kps, aud = (torch.tensor([r[i] for r in rows], dtype=torch.bool, device=device) for i in range(3))
        return DropMask(ref, kps, aud)

    def combine(self, outputs: torch.Tensor) -> torch.Tensor:
        """Guided prediction from the batched branch outputs (B = number of branches, first dim)."""
        names = self.branches
        if outputs.shape[0] != len(names):
            raise ValueError(f"expected {len(names)} branch outputs {names}, got batch {outputs.shape[0]}")
        parts = dict(zip(names, outputs.split(1)))
        s, a = float(self.scale), self.effective_audio_scale
        if names == ("cond",):
            return parts["cond"]
        if names == ("uncond", "cond"):
            u = parts["uncond"]
            return u + s * (parts["cond"] - u)  # the official expression
        if names == ("no_audio", "cond"):
            n = parts["no_audio"]
            return n + a * (parts["cond"] - n)
        u, n = parts["uncond"], parts["no_audio"]
        return u + s * (n - u) + a * (parts["cond"] - n)
