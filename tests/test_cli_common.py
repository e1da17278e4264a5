"""Shared command-line plumbing: one-line user errors, Lightning's log lines once and without advertisements."""

from __future__ import annotations

import logging

import pytest

from vexpress.cli._common import tidy_lightning_logging, user_errors
from vexpress.errors import InputError


def test_user_error_is_one_line_and_exit_code_2(capsys):
    @user_errors
    def task():
        raise InputError("audio file x.wav cannot be read; give a file PyAV can decode")

    with pytest.raises(SystemExit) as exc:
        task()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: audio file x.wav cannot be read; give a file PyAV can decode"]


def test_lightning_messages_go_to_the_root_handler_once(caplog):
    import lightning.pytorch  # noqa: F401  (adds Lightning's own stream handlers)
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    root = logging.getLogger()
    added = logging.StreamHandler()
    root.addHandler(added)  # as Hydra's job logging does
    try:
        tidy_lightning_logging()
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            lg = logging.getLogger(name)
            assert not [h for h in lg.handlers if type(h) is logging.StreamHandler]
            assert lg.propagate
        with caplog.at_level(logging.INFO):
            rank_zero_info("GPU available: False")
            rank_zero_info("Tip: try installing [litlogger](https://example) for cloud logging")
        messages = [r.getMessage() for r in caplog.records]
        assert messages.count("GPU available: False") == 1
        assert not any("litlogger" in m for m in messages)
    finally:
        root.removeHandler(added)
