"""Run a CLI's task function on a composed config, in-process, the way its ``main`` would (minus Hydra's runner)."""

from __future__ import annotations

from typing import Any, Callable, Iterable


def run_task(capsys, config_name: str, task: Callable[[Any], Any], overrides: Iterable[str]) -> tuple[int, str]:
    """Compose ``conf/<config_name>.yaml`` with ``overrides``, call ``task(cfg)``; returns (exit code, stderr)."""
    from hydra import compose, initialize_config_dir

    from vexpress.cli._common import config_path

    with initialize_config_dir(config_dir=config_path(), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    code = 0
    try:
        task(cfg)
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err
