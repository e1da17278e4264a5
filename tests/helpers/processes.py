"""Process checks for the kill and stop tests: who a run started, and that none of them outlives it (Linux /proc)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Iterable


def children(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is ``pid``, read from /proc."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def pool_workers(pid: int) -> set[int]:
    """The ``multiprocessing`` spawn workers among ``pid``'s children."""
    out = set()
    for c in children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes():
                out.add(c)
        except OSError:
            continue
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def assert_all_end(pids: Iterable[int], within_s: float, what: str) -> None:
    """Every process of ``pids`` ends within ``within_s`` seconds (a liveness bound, not a speed claim: an orphan
    would live forever)."""
    pids = set(pids)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], what


def kill_all(pids: Iterable[int]) -> None:
    """SIGKILL whatever of ``pids`` is still alive (a test's clean-up after a failed check)."""
    for p in pids:
        if alive(p):
            os.kill(p, signal.SIGKILL)
