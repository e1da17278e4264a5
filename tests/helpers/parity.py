"""Helpers for comparing against the official-code vectors in ``shared/parity/dev``."""

from __future__ import annotations

from pathlib import Path

import torch

#: max |ours - ref| <= TOLERANCE * max |ref| (shared/parity/README.md "Tolerances").
TOLERANCE = 1e-4


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative max error as the parity README defines it."""
    ours = ours.detach().to(torch.float64).cpu()
    ref = ref.detach().to(torch.float64).cpu()
    if ours.shape != ref.shape:
        raise AssertionError(f"shape {tuple(ours.shape)} != reference {tuple(ref.shape)}")
    scale = ref.abs().max().item()
    return (ours - ref).abs().max().item() / (scale if scale > 0 else 1.0)


def assert_parity(name: str, ours: torch.Tensor, ref: torch.Tensor, tol: float = TOLERANCE) -> float:
    err = rel_err(ours, ref)
    if not err <= tol:
        raise AssertionError(f"{name}: relative max error {err:.3e} exceeds {tol:.0e}")
    return err


def load_dev_net(parity_dir: Path):
    """The dev-config network with the official random weights, loaded strictly, in eval mode."""
    from vexpress.models import VExpressConfig, VExpressNet
    from vexpress.models.weights import load_official

    net = VExpressNet(VExpressConfig.from_json(parity_dir / "config.json"))
    load_official(net, parity_dir)
    return net.eval()


def load_vectors(parity_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(parity_dir / "inputs_outputs.safetensors"))
