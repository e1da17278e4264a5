"""``vexpress-foundation``: pretrain the embedded foundation the demo starts from (:mod:`vexpress.demo.foundation`).

Options: ``conf/foundation.yaml``; the pretraining data and training numbers: ``conf/experiment/foundation.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from vexpress.cli._common import hydra_main, tidy_lightning_logging, user_errors


@user_errors
def task(cfg) -> None:
    from vexpress.demo.foundation import run_foundation
    from vexpress.utils.io import check_writable_folder

    check_writable_folder(str(cfg.work_dir), "work_dir")
    check_writable_folder(str(Path(str(cfg.output_dir)).parent), "the folder of output_dir")
    tidy_lightning_logging()  # after Lightning is imported (by the runner), before the first fit
    run_foundation(cfg)


def main() -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    hydra_main("foundation", task, "vexpress-foundation")


if __name__ == "__main__":  # pragma: no cover
    main()
