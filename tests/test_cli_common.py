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


# ---- configuration errors and --help of every command (vexpress.cli._common.hydra_main) --------------------------
import importlib  # noqa: E402
import pkgutil  # noqa: E402
import sys  # noqa: E402

import vexpress.cli  # noqa: E402

#: command module -> its console script and one config group its own config uses (None: it has none)
COMMANDS = {"train": ("vexpress-train", "data"), "demo": ("vexpress-demo", "paths"),
            "evaluate": ("vexpress-eval", "metrics"), "generate": ("vexpress-generate", "sampler"),
            "preprocess": ("vexpress-preprocess", None), "extract_kps": ("vexpress-extract-kps", None),
            "synth": ("vexpress-synth", None), "foundation": ("vexpress-foundation", "paths")}


def _cli(module: str, args, monkeypatch, capsys) -> tuple[int, str, str]:
    """Run ``vexpress.cli.<module>.main()`` in-process with ``args``; (exit code, stdout, stderr)."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", [COMMANDS[module][0], *args])
    mod = importlib.import_module(f"vexpress.cli.{module}")
    code = 0
    try:
        mod.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_command_module_is_listed():
    modules = {m.name for m in pkgutil.iter_modules(vexpress.cli.__path__) if not m.name.startswith("_")}
    assert modules == set(COMMANDS), "a new command: add it to COMMANDS (and make its main() call hydra_main)"


def test_missing_mandatory_value_is_one_line_naming_the_key(capsys):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"reference_image": "???", "inner": {"seed": "${seed}"}, "seed": "???"})

    @user_errors
    def task(key):
        return OmegaConf.select(cfg, key, throw_on_missing=True)

    for key, named in (("reference_image", "reference_image"), ("inner.seed", "seed")):
        with pytest.raises(SystemExit) as exc:
            task(key)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: missing value for {named} "), err
        assert f"{named}=VALUE" in err[0]


def test_bugs_keep_their_traceback():
    @user_errors
    def task():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        task()


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_config_errors_of_every_command_are_one_line_exit_2(module, monkeypatch, capsys):
    """Each command goes through hydra_main: an unknown key, an override that does not parse, an unknown option."""
    cases = [(["nosuchkey=1"], "unknown config key 'nosuchkey' in the override 'nosuchkey=1'"),
             (["nosuchkey=[1"], "cannot parse the override 'nosuchkey=[1'")]
    if COMMANDS[module][1] is not None:
        group = COMMANDS[module][1]
        cases.append(([f"{group}=no_such_option"] if group != "metrics" else ["metrics=[no_such_option]"],
                      f"no config option '{group}/no_such_option'"))
    for args, expected in cases:
        code, out, err = _cli(module, args, monkeypatch, capsys)
        lines = err.strip().splitlines()
        assert code == 2, (module, args, err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (module, args, lines)
        assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err


@pytest.mark.parametrize("module,args,key", [("generate", ["weights=tiny", "audio=a.wav", "output=o.mp4"],
                                              "reference_image"),
                                             ("extract_kps", ["video=a.mp4"], "output"),
                                             ("train", ["seed=???"], "seed")])
def test_missing_required_value_through_the_command(module, args, key, monkeypatch, capsys, tmp_path):
    if module == "train":  # the run folder is created by Hydra before the task reads the config
        args = [*args, f"hydra.run.dir={tmp_path}", "logger=csv"]
    code, out, err = _cli(module, args, monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err[-2000:]
    assert lines[-1].startswith(f"error: missing value for {key} ") and f"{key}=VALUE" in lines[-1], lines


@pytest.mark.parametrize("module", sorted(COMMANDS))
def test_help_lists_only_the_commands_own_config_groups(module, monkeypatch, capsys):
    from vexpress.utils.paths import CONF_DIR

    code, out, err = _cli(module, ["--help"], monkeypatch, capsys)
    assert code == 0, err[-2000:]
    listed = set()
    if "== Configuration groups ==" in out:
        section = out.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
        listed = {line.split(":", 1)[0].strip() for line in section.splitlines() if ": " in line}
    own = COMMANDS[module][1]
    if own is not None and module != "generate":  # generate writes its own help page (its options, no groups)
        assert own in listed, (module, listed)
    training_only = {"callbacks", "trainer", "curriculum", "stage", "dropout", "launcher"}
    if module != "train":
        assert not listed & training_only, (module, listed)
    assert all((CONF_DIR / g).is_dir() for g in listed), listed
