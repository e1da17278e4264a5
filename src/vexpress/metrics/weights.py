"""Metric weight files: existence checks with actionable errors, and provenance (sha256, size) for reports."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Dict, Optional

from vexpress.errors import WeightsError

#: Where each metric's weights can be obtained (printed in errors and reports; never downloaded by us).
WEIGHT_SOURCES = {
    "fid": "weights-inception-2015-12-05-6726825d.pth from the torch-fidelity v0.2.0 GitHub release",
    "fvd": "i3d_torchscript.pt (StyleGAN-V's TorchScript port of tf.hub i3d-kinetics-400/1)",
    "syncnet": "syncnet_v2.model from joonson/syncnet_python's download_model.sh",
    "arcface": "an ArcFace-compatible TorchScript module (N,3,112,112) in [-1,1] RGB -> (N,D) embeddings",
}

_HASH_CACHE: Dict[tuple, str] = {}


def require_file(path: Optional[str | os.PathLike], what: str, key: str, source: str | None = None) -> Path:
    """Return ``path`` as a Path or raise :class:`WeightsError` naming the config key and where to get the file."""
    where = f" (get {source})" if source else ""
    if path is None or str(path) == "":
        raise WeightsError(f"no {what} weights configured: set {key} to a local file{where}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"{what} weights not found at {p}: set {key} to an existing local file{where}")
    return p


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file (cached per path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def file_info(path: str | os.PathLike, role: str = "") -> Dict[str, Any]:
    """Provenance record of a weight file: role, path, size in bytes and sha256."""
    p = Path(path).expanduser()
    return {"role": role, "path": str(p.resolve()), "size_bytes": p.stat().st_size, "sha256": sha256_file(p)}
