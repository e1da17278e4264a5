"""Small file helpers shared by the data writers."""

from __future__ import annotations

import os
from pathlib import Path


def set_public_mode(path: str | os.PathLike) -> Path:
    """Give a finished output the usual permissions (``0666 & ~umask``); temporary files are created 0600."""
    path = Path(path)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(path, 0o666 & ~umask)
    except OSError:  # not ours to change (e.g. another user's file): harmless
        pass
    return path
