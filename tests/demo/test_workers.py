"""vexpress.demo.workers: jobs in spawned processes return in order, write their own logs, and a failing job stops
the others and reaches the caller."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from vexpress.demo.workers import run_in_processes


def square_and_pid(x: int) -> tuple[int, int]:
    print(f"job {x}")
    return x * x, os.getpid()


def fail_or_sleep(x: int, marker: str) -> int:
    if x == 0:
        time.sleep(1.0)
        raise ValueError("job 0 broke")
    Path(marker).write_text(str(os.getpid()))
    time.sleep(120)  # killed long before this ends
    return x


def test_results_come_back_in_job_order_with_one_log_each(tmp_path):
    logs = [tmp_path / f"job{i}.log" for i in range(3)]
    out = run_in_processes(square_and_pid, [(i,) for i in range(3)], logs, workers=2, threads=1,
                           what=[f"job {i}" for i in range(3)])
    assert [r[0] for r in out] == [0, 1, 4]
    assert all(pid != os.getpid() for _, pid in out)
    assert [p.read_text().strip().splitlines()[-1] for p in logs] == ["job 0", "job 1", "job 2"]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from Linux /proc")
def test_a_failing_job_raises_and_stops_the_others(tmp_path):
    marker = tmp_path / "pid"
    t = time.monotonic()
    with pytest.raises(ValueError, match="job 0 broke"):
        run_in_processes(fail_or_sleep, [(0, str(marker)), (1, str(marker))],
                         [tmp_path / "a.log", tmp_path / "b.log"], workers=2, threads=1, what=["a", "b"])
    assert time.monotonic() - t < 60  # did not wait for the sleeping job
    pid = int(marker.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the other job kept running"
    assert "job 0 broke" in (tmp_path / "a.log").read_text()
