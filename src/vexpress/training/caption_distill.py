"""Caption distillation of the audio path (beyond the paper): the audio attention should say what a caption says.

The embedded foundation's cross-attention (``attn2``) was pretrained to draw each frame's expression from its caption
tokens (:mod:`vexpress.models.caption`; ``experiments/foundation/README.md``), and fed the truth's captions it draws
the demo's mouth close to the VAE floor. The audio path reaches that attention through the audio projection, which
the denoising loss alone teaches slowly: the mouth is a few latent pixels of the loss. This module adds a direct,
dense target. During a training forward pass every spatial block's ``attn2`` is also run, with the same (detached)
query, on the frame's caption tokens, without gradient; the term is the mean squared difference between what the
attention makes of the audio tokens and what it makes of the caption tokens, over the samples whose audio is not
dropped. Its gradient reaches the audio projection and the attention's key / value / output weights, never the
query's side of the network.

At training time the captions come from the target frames (``data.captions=true``: the synthetic world's mouth
opening, width and vowel; real data could measure them from lip landmarks). Generation never uses them.
"""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

import torch

from vexpress.errors import InputError, ShapeError

if TYPE_CHECKING:  # pragma: no cover
    from vexpress.models.vexpress_net import VExpressNet

#: the audio attentions of the denoiser's spatial transformer blocks (module names under ``denoising_unet``)
AUDIO_ATTENTION_MODULES = "*attentions.*.transformer_blocks.*.attn2"


class CaptionDistillation:
    """Collects the caption-distillation term over one forward pass of ``net`` (a context manager).

    Args:
        net: the network whose audio attentions are hooked.
        caption_tokens: (B, F, attributes, dim) caption tokens of the batch's frames (the teacher's keys and values).

    ``loss()`` after the forward: the mean over hooked attentions of the mean squared difference (a scalar; zero when
    every sample's audio was dropped).
    """

    def __init__(self, net: "VExpressNet", caption_tokens: torch.Tensor):
        if caption_tokens.ndim != 4:
            raise ShapeError(f"caption tokens must be (B, F, attributes, dim), got {tuple(caption_tokens.shape)}")
        unet = net.denoising_unet
        if any(getattr(m, "gradient_checkpointing", False) for m in unet.modules()):
            raise InputError("caption distillation hooks the audio attention, which gradient checkpointing runs twice; "
                             "set the stage's gradient_checkpointing=false or caption_distill=0")
        self.modules = [m for name, m in unet.named_modules() if fnmatch.fnmatch(name, AUDIO_ATTENTION_MODULES)]
        if not self.modules:
            raise InputError("caption distillation found no audio attention (attn2) in the denoiser")
        self.teacher = caption_tokens.reshape(-1, *caption_tokens.shape[2:])
        self.terms: list[torch.Tensor] = []
        self._handles: list = []
        self._busy = False

    def _hook(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self._busy:
            return
        query, tokens = args[0], (args[1] if len(args) > 1 else None)
        if tokens is None:
            return
        if tokens.shape[0] != self.teacher.shape[0]:
            raise ShapeError(f"caption tokens give {self.teacher.shape[0]} frames, the audio attention sees "
                             f"{tokens.shape[0]}")
        kept = tokens.flatten(1).abs().sum(1) > 0  # dropped audio arrives as zero tokens
        if not bool(kept.any()):
            return
        self._busy = True
        try:
            q = query[kept].detach()
            student = module(q, tokens[kept])
            with torch.no_grad():
                teacher = module(q, self.teacher[kept].to(q.dtype))
        finally:
            self._busy = False
        self.terms.append((student.float() - teacher.float()).pow(2).mean())

    def __enter__(self) -> "CaptionDistillation":
        self._handles = [m.register_forward_hook(self._hook) for m in self.modules]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def loss(self) -> torch.Tensor:
        if not self.terms:
            return self.teacher.new_zeros(())
        return torch.stack(self.terms).mean()
