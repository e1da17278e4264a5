"""Which checkpoint a stage resumes from, and the naming of checkpoints still being written.

:func:`resume_checkpoint` picks the newest readable checkpoint of a stage: ``last.ckpt`` first, then the step
checkpoints from the newest; a truncated or corrupt file is skipped with one warning line naming it; a folder
with checkpoints of which none is readable is a one-line :class:`~vexpress.errors.InputError`. The writer of those
files is :class:`vexpress.callbacks.checkpoint.SafeModelCheckpoint` (the event shell over this module): it writes
under :func:`partial_name` and renames when complete, so a file named here is whole or absent.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from vexpress.errors import InputError

log = logging.getLogger("vexpress.train")

PARTIAL_SUFFIX = ".partial"  # a checkpoint being written (never read, removed when a stage resumes)
_STEP = re.compile(r"(\d+)")


def partial_name(filepath: str) -> str:
    """The temporary name ``filepath`` is written under until it is complete (hidden, per process)."""
    head, tail = os.path.split(filepath)
    return os.path.join(head, f".{tail}.{os.getpid()}{PARTIAL_SUFFIX}")


def checkpoint_is_readable(path: str | os.PathLike) -> bool:
    """The file loads as a Lightning checkpoint (``weights_only=True``, memory-mapped: tensors are not read)."""
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - truncated zip, bad pickle, unreadable file: all mean "not usable"
        return False
    return isinstance(ckpt, dict) and "state_dict" in ckpt and "global_step" in ckpt


def _step_of(path: Path) -> int:
    nums = _STEP.findall(path.stem)
    return int(nums[-1]) if nums else -1


def checkpoint_candidates(folder: str | os.PathLike) -> list[Path]:
    """Checkpoint files of ``folder``, newest first: ``last.ckpt``, then the others by step number (then time)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = [p for p in folder.glob("*.ckpt") if not p.name.startswith(".")]
    last = [p for p in files if p.name == "last.ckpt"]
    others = sorted((p for p in files if p.name != "last.ckpt"),
                    key=lambda p: (_step_of(p), p.stat().st_mtime if p.exists() else 0.0), reverse=True)
    out: list[Path] = []
    seen: set[str] = set()
    for p in last + others:
        real = os.path.realpath(p)
        if real in seen:
            continue
        seen.add(real)
        out.append(p)
    return out


def remove_partial_files(folder: str | os.PathLike) -> None:
    """Delete the temporaries of checkpoints whose writing was interrupted (never complete, never read)."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(f".*{PARTIAL_SUFFIX}"):
            try:
                p.unlink()
            except OSError:  # pragma: no cover
                pass


def resume_checkpoint(folder: str | os.PathLike, stage: str = "") -> str | None:
    """The newest readable checkpoint in ``folder`` (``None`` when it holds none: the stage starts from step 0).

    Unreadable newer files are skipped with one warning line; a folder whose checkpoints are all unreadable raises
    :class:`InputError` (nothing to resume from, and starting over silently would discard the run's progress).
    """
    folder = Path(folder)
    remove_partial_files(folder)
    candidates = checkpoint_candidates(folder)
    if not candidates:
        return None
    bad: list[Path] = []
    for path in candidates:
        if checkpoint_is_readable(path):
            if bad:
                names = ", ".join(str(p) + (f" (-> {os.path.realpath(p)})" if p.is_symlink() else "") for p in bad)
                log.warning("checkpoint %s is truncated or corrupt; resuming from the previous one, %s", names, path)
            return str(path)
        bad.append(path)
    what = f"stage {stage!r}" if stage else "the stage"
    raise InputError(f"no readable checkpoint in {folder} ({', '.join(p.name for p in bad)} truncated or corrupt): "
                     f"delete that folder to restart {what} from its first step, then rerun")
