"""User-facing errors.

Every error a user can cause (a bad input file, a missing weight, wrong shapes) is raised as a
:class:`VExpressError` whose message is ONE line that names the input and says what to do. The CLI entry points
turn it into ``error: <message>`` on stderr and exit code 2, with no traceback and no partial output.
"""

from __future__ import annotations


class VExpressError(Exception):
    """Base class of all user-facing errors (one-line message: what is wrong with which input, and the fix)."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force one line


class InputError(VExpressError):
    """A user input (file, tensor, option) is missing, unreadable or malformed."""


class NoFaceError(InputError):
    """No face could be found where one is required."""


class WeightsError(VExpressError):
    """A weight file is missing, unreadable, or does not match the model (missing/unexpected keys, shapes)."""


class ShapeError(VExpressError, ValueError):
    """Tensors passed to the network disagree in shape (frames, channels, batch)."""
