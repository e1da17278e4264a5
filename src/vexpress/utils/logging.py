"""Logging helpers shared by the entry points and the applications (the lowest layer: no vexpress imports)."""

from __future__ import annotations

import logging


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
