"""Run the demo's independent jobs (training lanes, evaluations) in a few processes at once.

On a small CPU two one-thread processes get more done than one two-thread process: the demo's tiny model runs many
small kernels that do not keep two threads busy. Each job runs in a spawned process that dies with the demo (even
under ``kill -9``), writes its console output to its own log file, and a failing job stops the others.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

log = logging.getLogger("vexpress.demo")


def run_in_processes(fn: Callable[..., Any], jobs: Sequence[tuple], logs: Sequence[Path], workers: int,
                     threads: int, what: Sequence[str]) -> list[Any]:
    """``fn(*job)`` for every job, in ``workers`` spawned processes with ``threads`` torch threads each; job ``i``'s
    console output goes to ``logs[i]`` and ``what[i]`` names it in errors. Returns the results in job order.

    ``fn`` must be importable (module level). A failing job raises here (after the other processes are stopped);
    a process that dies is a :class:`~vexpress.errors.VExpressError` naming the job and its log."""
    import multiprocessing
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from vexpress.errors import VExpressError

    pool = ProcessPoolExecutor(max_workers=max(1, int(workers)), mp_context=multiprocessing.get_context("spawn"))
    finished = False
    try:
        futures = [pool.submit(_job, fn, tuple(job), int(threads), os.getpid(), str(path))
                   for job, path in zip(jobs, logs)]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [i for i, fut in enumerate(futures) if fut in done and fut.exception() is not None]
        results: list[Any] = [None] * len(futures)
        for i in failed + [i for i in range(len(futures)) if i not in failed]:  # a failure first, before any wait
            try:
                results[i] = futures[i].result()
            except BrokenProcessPool as err:
                raise VExpressError(f"the process of {what[i]} died; its output: {logs[i]}") from err
            except Exception:
                log.error("%s failed; its output: %s", what[i], logs[i])
                raise
        finished = True
        return results
    finally:
        if not finished:
            # a failure or an interrupt stops the other jobs too: nothing keeps running after the demo ends
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                if proc.is_alive():
                    proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)


def _job(fn: Callable[..., Any], job: tuple, threads: int, parent: int, log_path: str) -> Any:
    import torch

    from vexpress.utils.logging import tidy_lightning_logging
    from vexpress.utils.native import exit_with_parent

    exit_with_parent(parent)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
                        force=True)
    torch.set_num_threads(threads)
    tidy_lightning_logging()
    try:
        return fn(*job)
    except BaseException:
        log.exception("failed")
        raise
