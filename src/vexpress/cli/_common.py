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
