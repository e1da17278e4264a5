"""Shared plumbing of the command-line entry points."""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
import threading
from typing import Any, Callable, Iterator, Sequence, TypeVar

from vexpress.errors import VExpressError
from vexpress.utils.logging import tidy_lightning_logging  # noqa: F401 - the entry points import it from here

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn a :class:`VExpressError` into ``error: <one line>`` on stderr and a non-zero exit, no traceback.

    Use it *inside* ``@hydra.main`` (decorate the task function) so Hydra never prints its own traceback for
    problems the user can fix. A config error the task meets (a ``???`` value it reads while unset, an interpolation
    to a key that does not exist: see :func:`describe_config_error`) is reported the same way, naming the key.
    Other exceptions propagate unchanged: they are bugs and deserve a traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VExpressError as err:
            _report_user_error(str(err), err.exit_code)
        except Exception as err:  # noqa: BLE001 - a config value the user left unset or mistyped is not a bug
            message = describe_config_error(err)
            if message is None:
                raise
            _report_user_error(message)
        except KeyboardInterrupt:
            print("error: interrupted; nothing partial was written, rerun to resume", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def config_path() -> str:
    """Absolute path of the repository's ``conf/`` folder for ``@hydra.main(config_path=...)``."""
    from vexpress.utils.paths import CONF_DIR

    return str(CONF_DIR)


# ---------------------------------------------------------------------------------------------------------------
# stop signals: Ctrl-C and SIGTERM end a run cleanly (temporary files removed), and always end it
# ---------------------------------------------------------------------------------------------------------------
#: Seconds a run may take to end after a stop signal before it is ended by force (its temporary files removed).
STOP_GRACE_S = 10.0


@contextlib.contextmanager
def terminate_cleanly(grace_s: float | None = STOP_GRACE_S) -> Iterator[None]:
    """SIGTERM raises SystemExit(143) in the main thread, so temporary files are removed like on Ctrl-C.

    A stop signal that lands while a C extension runs Python code (a module's import, a callback) can come out of it
    as another exception: pybind11 turns the handler's exception into ``ImportError: initialization failed``. So once
    a stop signal was received, whatever ends the run ends it as that signal: exit 143 for SIGTERM, the Ctrl-C path
    (exit 130) for SIGINT.

    Such an exception can also be swallowed (a library's ``except ImportError`` around an optional import), and the
    interpreter's own shut-down can wait on a half-initialised extension. So a stop signal also arms a watchdog
    (:func:`stop_watchdog`): a run still alive ``grace_s`` seconds after the signal has its temporary files removed
    and ends at once, with the same exit code. ``grace_s=None``: no watchdog (a caller that outlives the signal)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def on_term(signum, frame):  # noqa: ARG001
        received.append(signum)
        raise SystemExit(128 + signum)

    def on_int(signum, frame):  # noqa: ARG001
        received.append(signum)
        raise KeyboardInterrupt

    handlers = {signal.SIGTERM: on_term}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # leave an ignored or custom Ctrl-C alone
        handlers[signal.SIGINT] = on_int
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        with stop_watchdog(tuple(handlers), grace_s) if grace_s is not None else contextlib.nullcontext():
            yield
    except BaseException as err:
        if not received or isinstance(err, (SystemExit, KeyboardInterrupt)):
            raise
        if received[0] == signal.SIGINT:
            raise KeyboardInterrupt from err
        raise SystemExit(128 + received[0]) from err
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stops_cleanly(fn: F) -> F:
    """Run a command-line task inside :func:`terminate_cleanly`. For the tools that do not train: Lightning has its
    own SIGTERM handling (it ends a fit at the next step), and a handler set before it would replace that."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with terminate_cleanly():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def stop_watchdog(signals: tuple[int, ...], grace_s: float) -> Iterator[None]:
    """A daemon thread that ends the process ``grace_s`` seconds after one of ``signals``, unless it ended first.

    It is woken by the interpreter's C-level signal handler (``signal.set_wakeup_fd``), not by the Python handler,
    so it runs even when the main thread never gets back to Python. Once a signal has arrived it stays armed after
    the block, through the interpreter's shut-down; without one it is disarmed when the block ends."""
    import os
    import time

    from vexpress.pipelines.video_io import discard_unfinished
    from vexpress.utils.io import discard_temporaries

    read_fd, write_fd = os.pipe()
    try:
        os.set_blocking(write_fd, False)
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError, AttributeError):  # not the main interpreter's main thread; a platform without it
        os.close(read_fd)
        os.close(write_fd)
        yield
        return
    wanted = {int(s) for s in signals}

    def watch() -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while True:
                data = pipe.read(64)
                if not data:  # disarmed
                    return
                stops = [b for b in data if b in wanted]
                if stops:
                    break
        time.sleep(grace_s)
        for discard in (discard_unfinished, discard_temporaries):
            with contextlib.suppress(BaseException):
                discard()
        name = signal.Signals(stops[0]).name
        with contextlib.suppress(OSError):
            os.write(2, f"error: still running {grace_s:g} s after {name}; ended by force "
                     f"(temporary files removed)\n".encode())
        os._exit(130 if stops[0] == signal.SIGINT else 128 + stops[0])

    threading.Thread(target=watch, name="vexpress-stop-watchdog", daemon=True).start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.close(write_fd)  # the watchdog reads what is left, then the end of the pipe


# ---------------------------------------------------------------------------------------------------------------
# config errors the user caused: one line, exit code 2
# ---------------------------------------------------------------------------------------------------------------
def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from (``__cause__`` first, then ``__context__``)."""
    out: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        out.append(cur)
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return out


def _one_line(text: str) -> str:
    """The informative lines of an omegaconf/Hydra message joined into one (their ``full_key:`` lines dropped)."""
    keep = []
    for line in str(text).splitlines():
        line = line.strip()
        if not line or line.startswith(("full_key:", "object_type=", "reference_type=", "See https://",
                                        "Set the environment variable HYDRA_FULL_ERROR")):
            continue
        keep.append(line.rstrip("."))
    return "; ".join(keep)


def _key_of(err: BaseException) -> str:
    return str(getattr(err, "full_key", None) or getattr(err, "key", None) or "")


def describe_config_error(err: BaseException, overrides: Sequence[str] | None = None) -> str | None:
    """One line for a configuration error the user caused (missing ``???`` value, unknown override key, an
    override or value that does not parse, an unknown config option), else ``None`` (a bug: keep the traceback).
    ``overrides``: the command-line arguments, to quote the override that named an unknown key."""
    try:
        from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
        from omegaconf.errors import (
            ConfigAttributeError,
            ConfigKeyError,
            GrammarParseError,
            InterpolationKeyError,
            MissingMandatoryValue,
            UnsupportedInterpolationType,
            ValidationError,
        )
    except ImportError:  # pragma: no cover - hydra/omegaconf are dependencies
        return None
    import re

    chain = _chain(err)
    missing = [e for e in chain if isinstance(e, MissingMandatoryValue)]
    if missing:
        # the key that is unset: named by the innermost message ("Missing mandatory value: seed") even when it was
        # reached through an interpolation (data.seed: ${seed}); else the node that raised
        named = [m.group(1) for e in chain for m in [re.search(r"Missing mandatory value: ([\w.\[\]/-]+)", str(e))]
                 if m]
        key = (named[-1] if named else "") or _key_of(missing[0]) or "a mandatory key"
        return (f"missing value for {key} (it is ??? in the config): set it on the command line, "
                f"{key}=VALUE (see --help)")
    for e in chain:
        if isinstance(e, OverrideParseException):
            return (f"cannot parse the override {e.override!r}: {_one_line(e.message)}; quote values with special "
                    "characters, e.g. 'key=\"a,b\"' (Hydra override grammar)")
        if isinstance(e, MissingConfigException):
            missing = str(getattr(e, "missing_cfg_file", "") or "")
            options = list(getattr(e, "options", None) or [])
            group = missing.rsplit("/", 1)[0] if "/" in missing else ""
            if group and not options:
                from vexpress.utils.paths import CONF_DIR

                options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
            if group and options:
                return f"no config option {missing!r}: choose {group}= one of {', '.join(map(str, options))}"
            return _one_line(str(e)).split("; Config search path")[0]
    if any(isinstance(e, ConfigCompositionException) for e in chain):
        inner = next((e for e in chain if isinstance(e, (ConfigKeyError, ConfigAttributeError))), None)
        if inner is not None and "not in struct" in str(inner):
            key = _key_of(inner) or "?"
            given = next((o for o in (overrides or ()) if o.split("=", 1)[0].lstrip("+~") in (key,)
                          or o.split("=", 1)[0].lstrip("+~").startswith(key + ".")), None)
            if given is None:
                return (f"unknown config key {key!r}: check its spelling against --help (to add a new key, write "
                        f"+{key}=VALUE)")
            return (f"unknown config key {key!r} in the override {given!r}: check its spelling against --help (to "
                    f"add a new key, write +{given.lstrip('+~')})")
        return _one_line(str(chain[0])) + (f" ({_one_line(str(inner))})" if inner is not None else "")
    for e in chain:
        if isinstance(e, (GrammarParseError, InterpolationKeyError, UnsupportedInterpolationType, ValidationError)):
            key = _key_of(e)
            where = f" in {key}" if key else ""
            return f"config value{where} does not parse or resolve: {_one_line(str(e))}; fix it on the command line"
    return None


def _report_user_error(message: str, code: int = 2) -> None:
    logging.getLogger("vexpress").debug("user error", exc_info=True)
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    sys.exit(code)


# ---------------------------------------------------------------------------------------------------------------
# the shared Hydra entry point: config errors as one line, --help listing this command's groups only
# ---------------------------------------------------------------------------------------------------------------
HELP_CONFIG = "vexpress"  # conf/hydra/help/vexpress.yaml
_HELP: dict[str, str] = {"app": "vexpress", "about": ""}


def _primary_default_groups(config_name: str) -> set[str]:
    """Groups named by the ``defaults`` list of ``conf/<config_name>.yaml`` (multi-option groups such as
    ``metrics: [a, b]`` are not in Hydra's ``runtime.choices``)."""
    import yaml

    from vexpress.utils.paths import CONF_DIR

    try:
        defaults = (yaml.safe_load((CONF_DIR / f"{config_name}.yaml").read_text()) or {}).get("defaults") or []
    except (OSError, yaml.YAMLError, AttributeError):
        return set()
    out = set()
    for entry in defaults:
        if isinstance(entry, dict):
            for key in entry:
                words = str(key).split()
                if words and words[0] not in ("override",):
                    out.add(words[-1].split("@", 1)[0].lstrip("/"))
    return out


def used_config_groups(choices: Any, config_name: str | None = None) -> list[tuple[str, list[str]]]:
    """(group, its options) for each config group a composed config uses (``hydra.runtime.choices``, plus the
    groups of the primary config's ``defaults`` list), without Hydra's own groups; options are the
    ``conf/<group>/*.yaml`` files."""
    from vexpress.utils.paths import CONF_DIR

    out = []
    names = {str(g) for g in dict(choices or {})} | (_primary_default_groups(config_name) if config_name else set())
    for group in sorted(names):
        if group == "hydra" or group.startswith("hydra/"):
            continue
        folder = CONF_DIR / group
        options = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
        if options:
            out.append((group, options))
    return out


def _help_text(what: str, *, _root_: Any) -> str:
    """Resolver behind ``${vexpress_help:app|about|groups}`` in ``conf/hydra/help/vexpress.yaml``."""
    if what == "groups":
        from omegaconf import OmegaConf

        choices = OmegaConf.select(_root_, "hydra.runtime.choices", default=None)
        groups = used_config_groups(choices, _HELP.get("config"))
        text = "\n".join(f"{g}: {', '.join(opts)}" for g, opts in groups) or "(this command has no config groups)"
    else:
        text = _HELP.get(what, "")
    return text.replace("$", "$$")  # Hydra passes the help through string.Template


def _register_help_resolver() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("vexpress_help"):
        OmegaConf.register_new_resolver("vexpress_help", _help_text)


def _about(task: Callable[..., Any]) -> str:
    doc = getattr(sys.modules.get(getattr(task, "__module__", ""), None), "__doc__", None) or ""
    return doc.strip()


def hydra_main(config_name: str, task: Callable[..., Any], app_name: str | None = None) -> None:
    """Run ``task`` as a Hydra app on ``conf/<config_name>.yaml`` (what every ``vexpress-*`` command's ``main`` does).

    On top of ``hydra.main``: a configuration error the user caused (a ``???`` value left unset, an unknown key in an
    override, an override that does not parse, an unknown config option) ends with ``error: <one line>`` and exit
    code 2 instead of Hydra's report; ``--help`` lists only the config groups this command's config uses (Hydra's
    default lists every group under ``conf/``). ``HYDRA_FULL_ERROR=1`` keeps Hydra's full tracebacks.
    """
    import os

    import hydra

    _HELP["app"] = app_name or os.path.basename(sys.argv[0] or "") or config_name
    _HELP["about"] = _about(task)
    _HELP["config"] = config_name
    _register_help_resolver()
    argv = list(sys.argv)
    if ("--help" in argv[1:] or "-h" in argv[1:]) and not any(a.startswith("hydra/help=") for a in argv[1:]):
        sys.argv = [*argv, f"hydra/help={HELP_CONFIG}"]
    user_full = os.environ.get("HYDRA_FULL_ERROR")
    if not user_full:
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises; we decide what is a user error
    try:
        hydra.main(version_base="1.3", config_path=config_path(), config_name=config_name)(task)()
    except Exception as err:  # noqa: BLE001 - only configuration errors are turned into one line
        message = None if user_full else describe_config_error(err, argv[1:])
        if message is None:
            raise
        _report_user_error(message)
    finally:
        sys.argv = argv
        if not user_full:
            os.environ.pop("HYDRA_FULL_ERROR", None)
