"""vexpress-preprocess under failure: a killed run leaves no worker behind, bad lists and all-bad inputs give one-line
errors without empty folders, and a rerun reconciles the output with the current inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.processes import assert_all_end, children, kill_all, pool_workers
from vexpress.data.records import is_clip_done, load_manifest, scan_clips


def _run_cli(overrides: list[str], capsys) -> tuple[int, str, str, object]:
    """The CLI's task function in-process: (exit code, stderr, stdout, report)."""
    from hydra import compose, initialize_config_dir

    from vexpress.cli._common import config_path
    from vexpress.cli.preprocess import run

    with initialize_config_dir(config_dir=config_path(), version_base="1.3"):
        cfg = compose("preprocess", overrides=["progress=false", "preprocess.min_face_size=40", *overrides])
    code, report = 0, None
    try:
        report = run(cfg)
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.err, captured.out, report


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process parents from Linux /proc")
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_leaves_no_worker_and_resumes(video_factory, tmp_path, sig):
    """SIGKILL: no worker outlives the run, the rerun removes what it left and resumes. SIGTERM (``kill``, a
    scheduler's stop): the run ends as stopped (exit 143), its workers end the clips they were on cleanly, and no
    temporary folder is left even before the rerun."""
    for i in range(3):
        video_factory(f"v{i}_1.mp4", seconds=1.2, seed=i)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "vexpress.cli.preprocess", f"input={tmp_path / 'in'}", f"output={out}", "workers=2",
           "progress=false", "preprocess.min_face_size=40", f"hydra.run.dir={tmp_path / 'logs'}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        # wait until both workers run and one clip is finished (so the rerun has something to resume)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            workers |= pool_workers(proc.pid)
            if len(workers) >= 2 and any(is_clip_done(out, f"v{i}_1") for i in range(3)):
                break
            time.sleep(0.2)
        assert proc.poll() is None and len(workers) >= 2, "the run ended before it could be killed"
        everyone = set(children(proc.pid))  # workers and multiprocessing's resource tracker
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=120)  # a liveness bound: a stopped run that waited for its queue would take longer
        assert_all_end(everyone, 20, "processes outlived the killed run")
    finally:
        kill_all(workers)
    done_before = {c.id for c in scan_clips(out)}
    assert len(done_before) >= 1
    if sig == signal.SIGTERM:
        assert code == 128 + signal.SIGTERM
        assert not [p.name for p in (out / "clips").rglob(".*")], "a stopped run left temporary files"
    else:
        assert code == -signal.SIGKILL

    rerun = subprocess.run([a if a != "workers=2" else "workers=1" for a in cmd], capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["kept"] == 3 and report["resumed"] == len(done_before)
    assert report["processed_now"] == 3 - len(done_before)
    assert len(load_manifest(out)) == 3
    assert not [p for p in (out / "clips").iterdir() if p.name.startswith(".")]


def test_list_naming_a_missing_file_is_a_one_line_error(video_factory, tmp_path, capsys):
    video_factory("good_1.mp4")
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'in' / 'good_1.mp4'}\n# a comment\nmissing.mp4\n")
    out = tmp_path / "new" / "out"
    code, err, _, _ = _run_cli([f"input={tmp_path / 'list.txt'}", f"output={out}"], capsys)
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1, err
    assert "list.txt, line 3" in err and "missing.mp4" in err
    assert not (tmp_path / "new").exists()  # the folders the run created are gone again


def test_no_usable_clip_exits_nonzero_and_keeps_the_report(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.mov").write_text("not a video")
    (tmp_path / "in" / "empty.mp4").write_bytes(b"")
    out = tmp_path / "out"
    code, err, _, _ = _run_cli([f"input={tmp_path / 'in'}", f"output={out}", "workers=1"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "no clip was usable" in err and str(out / "report.json") in err
    assert (out / "report.json").is_file() and len(list((out / "skipped").glob("*.json"))) == 2
    assert not (out / "manifest.json").exists() and not (out / "clips").exists()


def test_rerun_removes_clips_of_sources_no_longer_listed(video_factory, tmp_path, capsys):
    a = video_factory("a_1.mp4", seed=1)
    video_factory("b_1.mp4", seed=2)
    bad = tmp_path / "in" / "bad.mov"
    bad.write_text("not a video")
    out = tmp_path / "out"
    code, _, _, first = _run_cli([f"input={tmp_path / 'in'}", f"output={out}", "workers=1"], capsys)
    assert code == 0 and first["kept_clips"] == ["a_1", "b_1"] and first["removed_clips"] == []
    assert (out / "skipped" / "bad.json").is_file()

    a.unlink()
    bad.unlink()
    code, _, printed, again = _run_cli([f"input={tmp_path / 'in'}", f"output={out}", "workers=1"], capsys)
    assert code == 0
    assert again["removed_clips"] == ["a_1"] and again["kept_clips"] == ["b_1"] and again["processed_now"] == 0
    assert "removed 1 clip(s) whose source is no longer among the inputs: a_1" in printed
    assert [c.id for c in scan_clips(out)] == ["b_1"] and [r.id for r in load_manifest(out)] == ["b_1"]
    assert not (out / "skipped" / "bad.json").exists()
    assert not [p for p in (out / "clips").iterdir() if p.name.startswith(".")]
