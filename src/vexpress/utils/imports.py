"""Lazy imports of heavy optional modules with an actionable error."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise ModuleNotFoundError saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:  # pragma: no cover - exercised only on broken installs
        raise ModuleNotFoundError(
            f"{module} is needed for {purpose}; run `make install` (or pip install -e .) to get the pinned stack"
        ) from err
