"""ReferenceNet: diffusers' SD1.5 ``UNet2DConditionModel`` used as a feature extractor (spec §1.3, §2 write mode).

It runs once per reference image at timestep 0 with one all-zero 768-d text token. What the denoiser uses is the
output of ``norm2`` (after self-attention) of each of its 16 transformer blocks, captured with forward hooks and
keyed by module name. As in the official class, ``conv_norm_out`` does not exist (so the official
``reference_net.bin`` loads strictly). The forward stops right after the last block's ``norm2``: nothing after it
is used, so it is not computed.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from vexpress.errors import ShapeError
from vexpress.models.conditioning import ReferenceBank


class _BankComplete(Exception):
    """Raised from the last hook to end the ReferenceNet forward early (control flow, never escapes)."""


class ReferenceNet(nn.Module):
    """Wraps a diffusers ``UNet2DConditionModel`` (attribute ``unet``) and turns a latent image into a bank.

    Official checkpoints hold the wrapped UNet's keys (no ``unet.`` prefix): use :meth:`official_state_dict` and
    :meth:`load_official_state_dict` (``vexpress.models.weights`` does).
    """

    def __init__(self, unet_config: Mapping[str, Any]):
        super().__init__()
        cfg = {k: v for k, v in unet_config.items() if not k.startswith("_")}
        self.unet = UNet2DConditionModel(**cfg)
        self.unet.conv_norm_out = None  # absent in the official ReferenceNet
        self.cross_attention_dim = int(cfg.get("cross_attention_dim", 768))
        self.bank_keys: list[str] = []
        self._capture: dict[str, torch.Tensor] | None = None
        for name, module in self.unet.named_modules():
            if name.endswith("transformer_blocks.0") and hasattr(module, "norm2") and module.attn2 is not None:
                self.bank_keys.append(name)
                module.norm2.register_forward_hook(self._make_hook(name))

    def _make_hook(self, name: str):
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            if self._capture is None:  # not inside encode() (e.g. a plain forward): do nothing
                return
            self._capture[name] = output
            if len(self._capture) == len(self.bank_keys):
                raise _BankComplete

        return hook

    # The official checkpoint layout is the wrapped UNet's own (no ``unet.`` prefix).
    def official_state_dict(self) -> dict[str, torch.Tensor]:
        return self.unet.state_dict()

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True):
        return self.unet.load_state_dict(state_dict, strict=strict)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        if enabled:
            self.unet.enable_gradient_checkpointing()
        else:
            self.unet.disable_gradient_checkpointing()

    def forward(self, ref_latents: torch.Tensor) -> ReferenceBank:
        """(B, 4, h, w) reference latents (already scaled by the VAE factor) -> :class:`ReferenceBank`."""
        if ref_latents.ndim != 4 or ref_latents.shape[1] != self.unet.config.in_channels:
            raise ShapeError(
                f"reference latents must be (B, {self.unet.config.in_channels}, h, w), got {tuple(ref_latents.shape)}"
            )
        b = ref_latents.shape[0]
        text = torch.zeros(b, 1, self.cross_attention_dim, dtype=self.dtype, device=ref_latents.device)
        t = torch.zeros(b, dtype=torch.int64, device=ref_latents.device)
        self._capture = {}
        try:
            self.unet(ref_latents.to(self.dtype), t, encoder_hidden_states=text, return_dict=False)
        except _BankComplete:
            pass
        finally:
            captured, self._capture = self._capture, None
        if len(captured) != len(self.bank_keys):  # pragma: no cover - only if diffusers changes its block layout
            raise RuntimeError(f"ReferenceNet produced {len(captured)} of {len(self.bank_keys)} bank features")
        return ReferenceBank(captured)
