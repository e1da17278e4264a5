"""The progressive curriculum: an ordered list of stages run one after another (spec §4.2, house style §4.6).

Each stage gets its own ``trainer.fit`` (fresh optimizer, fresh DDP wrap: the trainable set changes between stages),
and stage N+1 starts from stage N's exported weights. :class:`Curriculum` is pure data plus the folder layout of a
run; the loop itself is :class:`vexpress.training.runner.CurriculumRunner`.

This module is the one owner of the run folder layout (``root`` = the run's ``paths.output_dir``)::

    root/train_summary.json                   what each stage trained (SUMMARY_FILE)
    root/stages/<index>_<name>/checkpoints/   step checkpoints (last.ckpt, step_XXXXXXX.ckpt)
    root/stages/<index>_<name>/export/        the stage's weights in the official file layout + config.json
    root/stages/<index>_<name>/export/DONE    written last (JSON: stage key, steps...): the stage is complete

Everything else asks it: the curriculum loop sets a stage config's ``stage_id``, ``stage_dir``, ``checkpoint_dir`` and
``export_dir`` from :meth:`Curriculum.stage_paths` (the callbacks, trainer and loggers in ``conf/`` interpolate those
keys), and code that reads a run uses :meth:`Curriculum.export_dir`, :func:`read_done_marker` and friends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from vexpress.errors import InputError

STAGES_DIR = "stages"
CHECKPOINTS_DIR = "checkpoints"
EXPORT_DIR = "export"
DONE_MARKER = "DONE"
SUMMARY_FILE = "train_summary.json"


def stage_id(index: int, name: str) -> str:
    """The name of stage ``index`` (called ``name``) in a run: its folder name and its label in logs and reports."""
    return f"{int(index)}_{name}"


def read_done_marker(export_dir: str | Path) -> dict[str, Any]:
    """The JSON of an export's ``DONE`` marker (what :func:`vexpress.training.export.export_stage` wrote: stage key,
    steps, ...); ``{}`` when the export is unfinished or the marker unreadable."""
    marker = Path(export_dir) / DONE_MARKER
    try:
        data = json.loads(marker.read_text() or "{}") if marker.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class Curriculum:
    """Which stages run, in which order.

    Attributes:
        name: curriculum name (``vexpress``, ``single``, ``joint_only``...), used in run names.
        stages: stage names, each a ``conf/stage/<name>.yaml`` option, in training order.
        chain: initialise each stage after the first from the previous stage's export.
        stage_overrides: per-stage deltas merged into that stage's config (``{image: {max_steps: 300}}``):
            experiments use it to give stages different budgets without copying stage files. Entries for stages
            this curriculum does not run are ignored (an experiment may serve several curricula); the training
            app checks that every key names a stage config.
    """

    name: str
    stages: list[str]
    chain: bool = True
    stage_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stages = [str(s) for s in self.stages]
        if not self.stages:
            raise InputError(f"curriculum {self.name!r} has no stages")
        if len(set(self.stages)) != len(self.stages):
            raise InputError(f"curriculum {self.name!r} lists a stage twice: {self.stages}")
        self.stage_overrides = {str(k): v for k, v in dict(self.stage_overrides or {}).items()}

    def stage_id(self, index: int) -> str:
        return stage_id(index, self.stages[index])

    def stage_dir(self, root: str | Path, index: int) -> Path:
        return Path(root) / STAGES_DIR / self.stage_id(index)

    def export_dir(self, root: str | Path, index: int) -> Path:
        return self.stage_dir(root, index) / EXPORT_DIR

    def checkpoint_dir(self, root: str | Path, index: int) -> Path:
        return self.stage_dir(root, index) / CHECKPOINTS_DIR

    def stage_paths(self, root: str | Path, index: int) -> dict[str, str]:
        """The layout keys of a stage config (``conf/train.yaml``: ``stage_id``, ``stage_dir``, ``checkpoint_dir``,
        ``export_dir``), which the callbacks, trainer and loggers interpolate."""
        return {"stage_id": self.stage_id(index), "stage_dir": str(self.stage_dir(root, index)),
                "checkpoint_dir": str(self.checkpoint_dir(root, index)),
                "export_dir": str(self.export_dir(root, index))}

    def is_done(self, root: str | Path, index: int) -> bool:
        return (self.export_dir(root, index) / DONE_MARKER).is_file()

    def done_info(self, root: str | Path, index: int) -> dict[str, Any]:
        """The JSON of stage ``index``'s ``DONE`` marker (``{}`` while the stage is unfinished)."""
        return read_done_marker(self.export_dir(root, index))

    @staticmethod
    def summary_path(root: str | Path) -> Path:
        return Path(root) / SUMMARY_FILE

    def init_source(self, root: str | Path, index: int, configured: str | None) -> str | None:
        """Where stage ``index`` takes its initial weights: the previous export when chained, else ``configured``."""
        if index > 0 and self.chain:
            prev = self.export_dir(root, index - 1)
            if not self.is_done(root, index - 1):
                raise InputError(f"stage {self.stages[index]!r} needs the export of {self.stages[index - 1]!r} at "
                                 f"{prev}, which is incomplete; run the earlier stage first")
            return str(prev)
        return configured
