"""Stage exports: a training stage's weights in the official file layout, for the next stage and the pipeline.

Thin wrappers over :mod:`vexpress.models.weights` (the export folder format is defined there): a ``DONE`` marker is
written after the folder is complete, so an interrupted export is never mistaken for a finished stage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from vexpress.training.curriculum import DONE_MARKER
from vexpress.utils.io import atomic_open


def load_weights(net: torch.nn.Module, folder: str | os.PathLike) -> None:
    """Load an export (or a folder of official files) into ``net`` strictly (keys and shapes must match). A
    foundation folder (``foundation.json``, see :func:`vexpress.models.weights.init_from_foundation`) loads its parts
    strictly and leaves the layers it does not hold as the network built them."""
    from vexpress.models.weights import init_from_foundation, is_foundation, load_official

    if is_foundation(folder):
        init_from_foundation(net, folder)
    else:
        load_official(net, folder)


def export_stage(
    directory: str | os.PathLike,
    net: torch.nn.Module,
    *,
    vae: Any | None = None,
    audio_encoder: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``net`` (+ optional VAE) as an export folder, then the ``DONE`` marker with ``extra`` as JSON."""
    from vexpress.models.weights import save_export

    directory = Path(directory)
    marker = directory / DONE_MARKER
    if marker.exists():
        marker.unlink()
    save_export(directory, net, vae=vae, audio_encoder=audio_encoder, extra=extra)
    with atomic_open(marker, "w", encoding="utf-8") as fh:
        json.dump(dict(extra or {}), fh, indent=2, default=str)
    return directory
