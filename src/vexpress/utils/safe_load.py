"""Safe reading of pickled files made by the official scripts (``kps.pth``, ``*_face_info.pt``, ``*_aud_embeds.pt``).

Those files are ``torch.save``d Python containers of numpy arrays and scalars. ``torch.load(weights_only=True)``
refuses them because numpy's reconstruction functions are not on torch's allow-list; the usual advice
``weights_only=False`` would execute arbitrary code from the file. Instead we run torch's restricted unpickler with
an explicit, minimal allow-list: numpy's array/scalar reconstruction and the dtype classes of plain numeric types.
Any other global in the file (a class, a function such as ``os.system``) still makes loading fail.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vexpress.errors import InputError

_NUMERIC = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
            "float64")


def numpy_safe_globals() -> list:
    """The allow-list: numpy array/scalar reconstruction and numeric dtype classes (also under numpy 2 names)."""
    import numpy as np

    try:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    except ImportError:  # pragma: no cover - numpy 2
        from numpy._core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    items: list = [np.ndarray, np.dtype, _reconstruct, scalar]
    # files written under the other numpy major version name the same functions differently
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        items.append((_reconstruct, f"{mod}._reconstruct"))
        items.append((scalar, f"{mod}.scalar"))
    for name in _NUMERIC:
        items.append(type(np.dtype(name)))
    return items


def safe_torch_load(path: str | os.PathLike, what: str = "file") -> Any:
    """``torch.load`` with ``weights_only=True`` plus the numpy allow-list; one-line :class:`InputError` on failure."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path} (check the path)")
    allowed = numpy_safe_globals()
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem becomes a one-line user error
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        keys = ("GLOBAL", "got <", "Unsupported")
        detail = next((ln for ln in lines if any(k in ln for k in keys)), lines[-1] if lines else type(err).__name__)
        raise InputError(f"cannot safely read {what} {path}: {detail.strip()[:200]} (only tensors, numpy arrays and "
                         "plain containers are accepted)") from err
