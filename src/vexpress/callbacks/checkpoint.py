"""Step checkpoints that survive a kill or a full disk.

:class:`SafeModelCheckpoint` is Lightning's ``ModelCheckpoint`` with every file written under a temporary name and
renamed when complete (``last.ckpt`` included), so a checkpoint is either whole or absent. With
``monitor: step, mode: max, save_top_k: 2`` (``conf/callbacks/model_checkpoint.yaml``) the previous step
checkpoint is deleted only after the new one is complete.

Which of these files a stage resumes from is decided in :mod:`vexpress.training.checkpoints`
(:func:`~vexpress.training.checkpoints.resume_checkpoint`), which also owns the temporary names.
"""

from __future__ import annotations

import os
from typing import Any
from weakref import proxy

from lightning.pytorch.callbacks import ModelCheckpoint

from vexpress.training.checkpoints import partial_name


def _fsync_file(path: str) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


class SafeModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose files are complete or absent (written to a temporary name, then renamed)."""

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        tmp = partial_name(filepath)
        try:
            trainer.save_checkpoint(tmp, self.save_weights_only)
            if trainer.is_global_zero:
                if not os.path.isfile(tmp):  # pragma: no cover - a strategy that writes folders (FSDP, DeepSpeed)
                    raise RuntimeError(f"checkpoint {tmp} was not written as one file")
                _fsync_file(tmp)
                os.replace(tmp, filepath)
                _fsync_dir(os.path.dirname(filepath))
        except BaseException:
            if trainer.is_global_zero and os.path.isfile(tmp):  # e.g. the disk filled up: the previous one stays
                os.remove(tmp)
            raise
        trainer.strategy.barrier("vexpress_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    @staticmethod
    def _link_checkpoint(trainer: Any, filepath: str, linkpath: str) -> None:
        """``last.ckpt`` -> the newest step checkpoint, replaced atomically (a symlink, or a copy where links fail)."""
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            tmp = partial_name(linkpath)
            if os.path.lexists(tmp):
                os.remove(tmp)
            try:
                os.symlink(os.path.relpath(filepath, os.path.dirname(linkpath)), tmp)
            except OSError:
                import shutil

                shutil.copyfile(filepath, tmp)
            if os.path.isdir(linkpath) and not os.path.islink(linkpath):
                import shutil

                shutil.rmtree(linkpath)
            os.replace(tmp, linkpath)
        trainer.strategy.barrier()
