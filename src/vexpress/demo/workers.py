"""Run the demo's jobs (training runs, evaluations, probes) in a few processes at once, each as soon as the jobs it
needs have finished.

On a small CPU two one-thread processes get more done than one two-thread process: the demo's tiny model runs many
small kernels that do not keep two threads busy. Jobs are started in the order given whenever a process is free and
their inputs are ready, so an evaluation starts while another run still trains. Each job runs in a spawned process
that dies with the demo (even under ``kill -9``), writes its console output to its own log file, and a failing job
stops the others.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

log = logging.getLogger("vexpress.demo")


@dataclass(frozen=True)
class Job:
    """One unit of work of :func:`run_jobs`: ``fn(*args)``, started once every job named in ``after`` has finished.

    ``args`` may be a callable that builds the arguments, in this process, from the results finished so far (job
    name -> result): how a job receives what an earlier one produced. ``fn`` must be importable (module level), and
    the arguments picklable. ``log``: where the job's console output goes when it runs in a worker process."""

    name: str
    fn: Callable[..., Any]
    args: tuple | Callable[[Mapping[str, Any]], tuple] = ()
    after: tuple[str, ...] = ()
    log: Path | None = None

    def arguments(self, results: Mapping[str, Any]) -> tuple:
        return tuple(self.args(results)) if callable(self.args) else tuple(self.args)


def run_jobs(jobs: Sequence[Job], workers: int, threads: int,
             on_done: Callable[[Job, Any], None] | None = None) -> dict[str, Any]:
    """Every job, each once the jobs it comes ``after`` have finished; returns job name -> result.

    With ``workers`` <= 1 the jobs run here, in the order given (which must respect ``after``). Otherwise they run in
    ``workers`` spawned processes with ``threads`` torch threads each; whenever a process is free it takes the first
    job in the given order whose inputs are ready, so the order is the priority. ``on_done(job, result)`` is called
    here as each job finishes. A failing job raises here after the other processes are stopped; a process that dies
    is a :class:`~vexpress.errors.VExpressError` naming the job and its log."""
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {names}")
    unknown = {d for j in jobs for d in j.after if d not in names}
    if unknown:
        raise ValueError(f"jobs come after jobs that do not exist: {sorted(unknown)}")
    results: dict[str, Any] = {}
    if int(workers) <= 1:
        for job in jobs:
            missing = [d for d in job.after if d not in results]
            if missing:
                raise ValueError(f"job {job.name} is listed before {missing}, which it needs")
            results[job.name] = job.fn(*job.arguments(results))
            if on_done is not None:
                on_done(job, results[job.name])
        return results
    return _run_in_pool(jobs, int(workers), int(threads), on_done, results)


def _run_in_pool(jobs: Sequence[Job], workers: int, threads: int, on_done: Callable[[Job, Any], None] | None,
                 results: dict[str, Any]) -> dict[str, Any]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from vexpress.errors import VExpressError
    from vexpress.utils.native import stop_pool

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(os.getpid(),))
    waiting = list(jobs)
    running: dict[Any, Job] = {}
    finished = False
    try:
        while waiting or running:
            for job in [j for j in waiting if all(d in results for d in j.after)]:
                if len(running) >= workers:
                    break
                waiting.remove(job)
                log_path = str(job.log) if job.log is not None else os.devnull
                running[pool.submit(_job, job.fn, job.arguments(results), threads, log_path)] = job
            if not running:
                raise ValueError(f"jobs wait for each other: {[j.name for j in waiting]}")
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: f.exception() is None):  # a failure first
                job = running.pop(fut)
                try:
                    results[job.name] = fut.result()
                except BrokenProcessPool as err:
                    raise VExpressError(f"the process of job {job.name} died; its output: {job.log}") from err
                except Exception:
                    log.error("job %s failed; its output: %s", job.name, job.log)
                    raise
                if on_done is not None:
                    on_done(job, results[job.name])
        finished = True
        return results
    finally:
        if not finished:
            # a failure or an interrupt stops the other jobs too: nothing keeps running after the demo ends (a
            # training job resumes from its checkpoints, so it is killed, not asked to finish)
            stop_pool(pool, kill=True)
        pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(parent: int) -> None:
    from vexpress.utils.native import exit_with_parent

    exit_with_parent(parent)


def _job(fn: Callable[..., Any], args: tuple, threads: int, log_path: str) -> Any:
    """One job in a worker process: its console output to ``log_path``, ``threads`` torch threads."""
    import sys

    import torch

    from vexpress.utils.logging import tidy_lightning_logging

    if log_path != os.devnull:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
                        force=True)
    torch.set_num_threads(threads)
    tidy_lightning_logging()
    try:
        return fn(*args)
    except BaseException:
        log.exception("failed")
        raise
