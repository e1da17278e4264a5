"""Stop signals and the temporary files of atomic writes (:mod:`vexpress.utils.io`)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from vexpress.utils.io import atomic_path, deferred_signals

pytestmark = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="Python runs signal handlers in the main thread only")


@pytest.fixture
def recorded_sigterm():
    """SIGTERM handled by recording it (instead of stopping the test run)."""
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, previous)


def _python_steps() -> None:
    """Bytecodes and a sleep: a pending Python signal handler runs during these."""
    total = 0
    for i in range(10_000):
        total += i
    time.sleep(0.02)


def test_a_stop_signal_waits_for_the_end_of_a_deferred_block(recorded_sigterm):
    with deferred_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        _python_steps()
        assert recorded_sigterm == []  # held back at the operating-system level
    _python_steps()
    assert recorded_sigterm == [signal.SIGTERM]  # delivered once the block ends, not lost


def test_without_deferral_the_handler_runs_at_once(recorded_sigterm):
    """The control: the test above would fail without the block."""
    os.kill(os.getpid(), signal.SIGTERM)
    _python_steps()
    assert recorded_sigterm == [signal.SIGTERM]


def test_stop_inside_an_atomic_write_leaves_nothing(tmp_path):
    """The handler of ``vexpress-generate`` raises ``SystemExit`` on SIGTERM: the temporary file goes with it."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(SystemExit), atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
            os.kill(os.getpid(), signal.SIGTERM)
            _python_steps()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []


def test_temporaries_are_tracked_until_published_and_a_forced_exit_removes_the_live_ones(tmp_path):
    """What the command-line tools' stop watchdog calls before ending a run by force (its ``finally`` blocks never
    run then): every temporary file and folder still under way goes; published outputs are not touched."""
    from vexpress.utils.io import atomic_dir, discard_temporaries

    with atomic_path(tmp_path / "done.json") as tmp:
        tmp.write_text("{}")
    assert discard_temporaries() == 0  # published: nothing tracked any more
    with atomic_path(tmp_path / "a.json") as tmp_file, atomic_dir(tmp_path / "folder") as tmp_folder:
        tmp_file.write_text("{")
        (tmp_folder / "x.bin").write_bytes(b"\0")
        assert discard_temporaries() == 2  # as the watchdog would, mid-write
        assert not tmp_file.exists() and not tmp_folder.exists()
        (tmp_folder).mkdir()  # let the blocks end normally (their own clean-up finds what it expects)
        tmp_file.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "done.json", "folder"]
    assert discard_temporaries() == 0
