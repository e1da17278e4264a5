"""Shared plumbing of the command-line entry points."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any, Callable, TypeVar

from vexpress.errors import VExpressError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn a :class:`VExpressError` into ``error: <one line>`` on stderr and a non-zero exit, no traceback.

    Use it *inside* ``@hydra.main`` (decorate the task function) so Hydra never prints its own traceback for
    problems the user can fix. Other exceptions propagate unchanged: they are bugs and deserve a traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VExpressError as err:
            logging.getLogger("vexpress").debug("user error", exc_info=True)
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            print("error: interrupted; nothing partial was written, rerun to resume", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def config_path() -> str:
    """Absolute path of the repository's ``conf/`` folder for ``@hydra.main(config_path=...)``."""
    from vexpress.utils.paths import CONF_DIR

    return str(CONF_DIR)


class _DropHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # Lightning's advertisements for its cloud services
        msg = str(record.msg)
        return "litlogger" not in msg and "litmodels" not in msg


def tidy_lightning_logging() -> None:
    """One line per Lightning message under Hydra, without the cloud-logger advertisement.

    Lightning gives its loggers their own stream handler when it is imported before logging is configured; under
    Hydra (which configures the root logger afterwards) every message then appears twice. When the root logger
    has handlers, Lightning's messages go there only (console and the run's log file).
    """
    root_has_handlers = logging.getLogger().hasHandlers()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        if root_has_handlers:
            for h in list(lg.handlers):
                if type(h) is logging.StreamHandler:
                    lg.removeHandler(h)
            lg.propagate = True
    rz = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropHint) for f in rz.filters):
        rz.addFilter(_DropHint())
    import warnings

    # frozen sub-modules (VAE, ReferenceNet up_blocks.3, the audio encoder) are in eval mode on purpose
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
