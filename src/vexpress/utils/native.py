"""Helpers around native (C/C++) libraries."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True) -> Iterator[None]:
    """Silence what native code writes to file descriptor 2 while the block runs.

    mediapipe's C++ core logs start-up chatter (XNNPACK delegate, feedback-manager warnings) straight to fd 2,
    ignoring ``GLOG_minloglevel``. Python's own ``sys.stderr`` is flushed first and restored afterwards; keep the
    block short, since anything else written to stderr meanwhile is dropped too. ``VEXPRESS_NATIVE_LOGS=1``
    disables the silencing (for debugging).
    """
    if not enabled or os.environ.get("VEXPRESS_NATIVE_LOGS") == "1":
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest capture or an unusual stderr: nothing to silence
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        try:
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def single_threaded_worker() -> None:
    """For process-pool workers: one torch and one OpenCV thread each (the pool provides the parallelism)."""
    import torch

    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # noqa: BLE001  (OpenCV is optional: mediapipe brings it)
        pass
