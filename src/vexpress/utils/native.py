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


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _set_parent_death_signal(sig: int) -> bool:
    """Ask the Linux kernel to send ``sig`` to this process when its parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def exit_with_parent(parent_pid: int | None = None, poll_seconds: float = 1.0) -> None:
    """Make this (worker) process end when its parent process ends, even when the parent is killed with SIGKILL.

    Call it first thing in a process-pool worker's initializer, with the parent's pid (``os.getpid()`` in the
    parent, passed through ``initargs``). Two guards: on Linux the kernel sends SIGKILL at the parent's death
    (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon thread checks every ``poll_seconds`` that the process was
    not re-parented. A parent that died before this call is caught by the immediate check.
    """
    import signal
    import threading
    import time

    parent = os.getppid() if parent_pid is None else int(parent_pid)
    _set_parent_death_signal(signal.SIGKILL)
    if not parent_alive(parent):
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if not parent_alive(parent):
                os._exit(1)

    threading.Thread(target=watch, name="vexpress-exit-with-parent", daemon=True).start()


def parent_alive(parent_pid: int) -> bool:
    """Whether this process's parent is still ``parent_pid`` (an orphan is re-parented to init or a reaper)."""
    return os.getppid() == int(parent_pid)


def exit_on_sigterm() -> None:
    """In a pool worker: SIGTERM raises ``SystemExit`` (exit 143), so the ``finally`` blocks of the work it is on
    run (an atomic write removes its temporary file or folder) before the process ends. :func:`stop_pool` sends it."""
    import signal

    signal.signal(signal.SIGTERM, _raise_exit)


def _raise_exit(signum, frame) -> None:  # noqa: ARG001
    raise SystemExit(128 + signum)


def stop_pool(pool, kill: bool = False, join_s: float = 10.0) -> None:
    """End a ``ProcessPoolExecutor`` of a run that is being stopped or has failed, without waiting for its queue:
    queued work is cancelled and every live worker gets SIGTERM (``kill=True``: SIGKILL), then is joined for at most
    ``join_s`` seconds. Leaving the pool's ``with`` block alone would wait for every queued item. Workers set up with
    :func:`exit_on_sigterm` end the item they are on cleanly."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # CPython's pool keeps its workers here
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.kill() if kill else proc.terminate()
    for proc in procs:
        proc.join(timeout=join_s)
