"""Composing and running the training app in-process for the config / CLI tests."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning.pytorch as pl

from vexpress.utils.paths import CONF_DIR, REPO_ROOT

#: A very small synthetic set (3 identities, 1 clip each, 2 s at 25 fps: generated in about a second).
SMALL_DATA = [
    "data.synthetic.num_identities=3", "data.synthetic.heldout_identities=1", "data.synthetic.clips_per_identity=1",
    "data.synthetic.seconds=2.0", "data.samples_per_clip=8", "data.num_workers=0", "data.persistent_workers=false",
    "data.reference_margin=4", "data.workers_for_synthesis=1",
]

#: Tiny-scale replacements for experiments made for GPUs and real data (house style §4.4).
TINY = ["model=tiny", "model/vae=tiny_random", "trainer=cpu", "logger=csv"]


def overrides(tmp: Path, extra: Sequence[str] = (), cache: Path | None = None, small_data: bool = True) -> list[str]:
    """Folders in ``tmp`` + ``extra``; with ``small_data`` the data is the small synthetic set (``data=synthetic``
    is forced after ``extra``)."""
    data = ["data=synthetic", *SMALL_DATA] if small_data else []
    return [f"paths.root_dir={REPO_ROOT}", f"paths.output_dir={tmp}", f"paths.cache_dir={cache or tmp / 'cache'}",
            *extra, *data]


def compose(ov: Sequence[str]):
    from hydra import compose as hydra_compose

    return hydra_compose(config_name="train", overrides=list(ov))


def run(ov: Sequence[str]):
    """Compose ``train.yaml`` with ``ov`` and run the curriculum (as ``vexpress-train`` does)."""
    from hydra import initialize_config_dir

    from vexpress.training.runner import CurriculumRunner

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return CurriculumRunner(compose(ov), list(ov)).run()


def full_and_stopped_runs(tmp: Path, stage: Sequence[str], cache: Path | None, stop_step: int = 2):
    """An uninterrupted run (``tmp/full``) and the same run stopped after ``stop_step`` (``tmp/killed``), for the
    kill-and-resume tests; returns (full results, killed run folder, stopped results)."""
    full = run(overrides(tmp / "full", stage, cache))
    killed = tmp / "killed"
    stop = ["+callbacks.stop._target_=tests.training.cli_helpers.StopAt", f"+callbacks.stop.step={stop_step}"]
    first = run(overrides(killed, [*stage, *stop], cache))
    return full, killed, first


class StopAt(pl.Callback):
    """Stops the fit after ``step`` optimisation steps, like a killed job (its last checkpoint stays)."""

    def __init__(self, step: int):
        self.step = int(step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True
