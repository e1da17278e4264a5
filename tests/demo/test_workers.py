"""vexpress.demo.workers: jobs run once their inputs are ready, in spawned processes that write their own logs, a
later job receives an earlier one's result, and a failing job stops the others and reaches the caller."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from vexpress.demo.workers import Job, run_jobs


def square_and_pid(x: int) -> tuple[int, int]:
    print(f"job {x}")
    return x * x, os.getpid()


def stamp(name: str, seconds: float) -> tuple[str, float, float]:
    t = time.time()
    time.sleep(seconds)
    return name, t, time.time()


def fail_or_sleep(x: int, marker: str) -> int:
    if x == 0:
        time.sleep(1.0)
        raise ValueError("job 0 broke")
    Path(marker).write_text(str(os.getpid()))
    time.sleep(120)  # killed long before this ends
    return x


def test_results_come_back_by_name_with_one_log_each(tmp_path):
    logs = [tmp_path / f"job{i}.log" for i in range(3)]
    jobs = [Job(f"j{i}", square_and_pid, (i,), log=logs[i]) for i in range(3)]
    out = run_jobs(jobs, workers=2, threads=1)
    assert [out[f"j{i}"][0] for i in range(3)] == [0, 1, 4]
    assert all(pid != os.getpid() for _, pid in out.values())
    assert [p.read_text().strip().splitlines()[-1] for p in logs] == ["job 0", "job 1", "job 2"]


def test_a_job_starts_when_its_inputs_are_ready_and_receives_them(tmp_path):
    """'slow' and 'quick' start together; 'after_quick' needs only 'quick', so it starts before 'slow' ends, and it
    receives 'quick''s result; the order given is the priority among ready jobs."""
    jobs = [Job("slow", stamp, ("slow", 3.0), log=tmp_path / "slow.log"),
            Job("quick", stamp, ("quick", 0.2), log=tmp_path / "quick.log"),
            Job("after_quick", stamp, lambda done: (f"after {done['quick'][0]}", 0.2), after=("quick",),
                log=tmp_path / "after.log")]
    finished: list[str] = []
    out = run_jobs(jobs, workers=2, threads=1, on_done=lambda job, _: finished.append(job.name))
    assert out["after_quick"][0] == "after quick"
    assert out["after_quick"][1] >= out["quick"][2]            # after its input
    assert out["after_quick"][2] < out["slow"][2]              # while the slow job still ran
    assert finished == ["quick", "after_quick", "slow"]
    # one process: in the order given, here
    here = run_jobs(jobs, workers=1, threads=1)
    assert here["after_quick"][0] == "after quick" and here["slow"][2] <= here["quick"][1]


def test_jobs_that_wait_for_each_other_or_for_nothing_are_refused():
    with pytest.raises(ValueError, match="do not exist"):
        run_jobs([Job("a", square_and_pid, (1,), after=("b",))], workers=2, threads=1)
    with pytest.raises(ValueError, match="wait for each other"):
        run_jobs([Job("a", square_and_pid, (1,), after=("b",)), Job("b", square_and_pid, (2,), after=("a",))],
                 workers=2, threads=1)
    with pytest.raises(ValueError, match="listed before"):
        run_jobs([Job("a", square_and_pid, (1,), after=("b",)), Job("b", square_and_pid, (2,))], workers=1,
                 threads=1)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from Linux /proc")
def test_a_failing_job_raises_and_stops_the_others(tmp_path):
    marker = tmp_path / "pid"
    t = time.monotonic()
    with pytest.raises(ValueError, match="job 0 broke"):
        run_jobs([Job("a", fail_or_sleep, (0, str(marker)), log=tmp_path / "a.log"),
                  Job("b", fail_or_sleep, (1, str(marker)), log=tmp_path / "b.log")], workers=2, threads=1)
    assert time.monotonic() - t < 60  # did not wait for the sleeping job
    pid = int(marker.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the other job kept running"
    assert "job 0 broke" in (tmp_path / "a.log").read_text()
