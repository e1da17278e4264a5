"""Repository and data locations (replaces LHT's rootutils)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: The checkout root when vexpress is installed editable (the supported way); ``conf/`` lives there.
REPO_ROOT = PACKAGE_DIR.parents[1]
CONF_DIR = REPO_ROOT / "conf"


def shared_dir() -> Path:
    """The team's read-only ``shared`` folder (design docs, parity vectors, sample clips).

    ``$VEXPRESS_SHARED_DIR`` overrides the default ``<repo>/../shared``.
    """
    return Path(os.environ.get("VEXPRESS_SHARED_DIR", REPO_ROOT.parent / "shared"))


def parity_dir() -> Path:
    """Official-code parity vectors: ``$VEXPRESS_PARITY_DIR`` or ``<shared>/parity/dev``."""
    env = os.environ.get("VEXPRESS_PARITY_DIR")
    return Path(env) if env else shared_dir() / "parity" / "dev"


def samples_dir() -> Path:
    """Real sample clips from the official repository (``<shared>/samples``)."""
    return shared_dir() / "samples"
