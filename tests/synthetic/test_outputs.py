"""vexpress-synth destinations: checked by writing there before any compute; one-line errors, no empty folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import run_task

SMALL = ["synthetic.num_identities=2", "synthetic.heldout_identities=1", "synthetic.clips_per_identity=1",
         "synthetic.seconds=1.0", "synthetic.size=32", "workers=1"]


def _run_cli(capsys, tmp_path, *overrides) -> tuple[int, str]:
    from vexpress.cli.synth import run

    return run_task(capsys, "synth", run, [*SMALL, f"cache_dir={tmp_path / 'cache'}", *overrides])


def _one_line(code, err):
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, err


def test_output_that_is_a_file_or_not_writable(tmp_path, capsys):
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    _one_line(*_run_cli(capsys, tmp_path, f"output={a_file}"))
    _one_line(*_run_cli(capsys, tmp_path, f"output={a_file / 'set'}"))  # a file used as a folder
    if Path("/proc/self").is_dir():  # not writable even for root
        _one_line(*_run_cli(capsys, tmp_path, "output=/proc/vexpress-test/set"))
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("where", ["file_parent", "folder", "proc"])
def test_bad_preview_fails_before_any_work(tmp_path, capsys, where):
    if where == "proc" and not Path("/proc/self").is_dir():
        pytest.skip(reason="needs Linux /proc for a folder root cannot write")
    (tmp_path / "taken").write_text("x")
    (tmp_path / "adir").mkdir()
    preview = {"file_parent": tmp_path / "taken" / "p.png", "folder": tmp_path / "adir",
               "proc": Path("/proc/vexpress-test.png")}[where]
    code, err = _run_cli(capsys, tmp_path, f"output={tmp_path / 'set'}", f"preview={preview}")
    _one_line(code, err)
    assert not (tmp_path / "set").exists()  # nothing generated, and the empty output folder is removed again
