"""``vexpress-demo`` (``make demo``): the embedded default end to end on a CPU.

Synthetic benchmark -> tiny VAE -> the paper's progressive recipe and two ablations -> held-out evaluation with
the shuffled-audio control -> sample video -> ``report.{md,json,png}`` under ``output_dir`` (default
``demo_output/``). Everything is cached, so a second run only redoes what changed. Options: ``conf/demo.yaml``
(e.g. ``vexpress-demo output_dir=/tmp/demo eval.clips=4``); the training numbers live in
``conf/experiment/demo_*.yaml``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from vexpress.cli._common import hydra_main, tidy_lightning_logging, user_errors

LOG_FILE = "demo.log"


def check_folders(cfg) -> Path:
    """``output_dir`` and ``paths.cache_dir`` accept files (a temporary file is created in each) before any work;
    returns the output folder. Hydra itself creates no folder for the demo (``hydra.run.dir: .``)."""
    from vexpress.utils.io import check_writable_folder

    out = check_writable_folder(str(cfg.output_dir), "output_dir")
    check_writable_folder(str(cfg.paths.cache_dir), "cache folder (paths.cache_dir)")
    return out


def _log_to_file(path: Path) -> None:
    """The run's log lines also go to ``path`` (what Hydra's job logging did before the folder was checked)."""
    root = logging.getLogger()
    if any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve() for h in root.handlers):
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    root.addHandler(handler)


@user_errors
def task(cfg) -> None:
    from vexpress.demo.run import run_demo

    tidy_lightning_logging()  # after Lightning is imported (by the demo's training), before the first fit
    out = check_folders(cfg)
    _log_to_file(out / LOG_FILE)
    report = run_demo(cfg)
    print(f"[demo] report: {cfg.output_dir}/report.md  (total {report['seconds']['total']:.0f} s)")
    for label, e in report["evaluation"].items():
        print(f"[demo] {label:>32}: mouth err {e['mouth_err_correct']:.3f} (shuffled {e['mouth_err_shuffled']:.3f}, "
              f"ratio {e['ratio']:.2f}), identity {e['identity_err']:.3f}, pose {e['pose_err']:.2f} px")
    print(f"[demo] goals met: {report['goals'].get('all_met')}")


def main() -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    hydra_main("demo", task, "vexpress-demo")


if __name__ == "__main__":  # pragma: no cover
    main()
