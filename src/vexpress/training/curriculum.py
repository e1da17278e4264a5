"""The progressive curriculum: an ordered list of stages run one after another (spec §4.2, house style §4.6).

Each stage gets its own ``trainer.fit`` (fresh optimizer, fresh DDP wrap: the trainable set changes between stages),
and stage N+1 starts from stage N's exported weights. :class:`Curriculum` is pure data plus the folder layout of a
run; the loop itself is :class:`vexpress.training.runner.CurriculumRunner`.

Run folder layout (``root`` = the Hydra output dir of the run)::

    root/stages/<index>_<name>/checkpoints/   step checkpoints (last.ckpt, step_XXXXXXX.ckpt)
    root/stages/<index>_<name>/export/        the stage's weights in the official file layout + config.json
    root/stages/<index>_<name>/export/DONE    written last: the stage is complete and is skipped on a re-run
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from vexpress.errors import InputError

DONE_MARKER = "DONE"


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

    def stage_dir(self, root: str | Path, index: int) -> Path:
        return Path(root) / "stages" / f"{index}_{self.stages[index]}"

    def export_dir(self, root: str | Path, index: int) -> Path:
        return self.stage_dir(root, index) / "export"

    def checkpoint_dir(self, root: str | Path, index: int) -> Path:
        return self.stage_dir(root, index) / "checkpoints"

    def is_done(self, root: str | Path, index: int) -> bool:
        return (self.export_dir(root, index) / DONE_MARKER).is_file()

    def init_source(self, root: str | Path, index: int, configured: str | None) -> str | None:
        """Where stage ``index`` takes its initial weights: the previous export when chained, else ``configured``."""
        if index > 0 and self.chain:
            prev = self.export_dir(root, index - 1)
            if not (prev / DONE_MARKER).is_file():
                raise InputError(f"stage {self.stages[index]!r} needs the export of {self.stages[index - 1]!r} at "
                                 f"{prev}, which is incomplete; run the earlier stage first")
            return str(prev)
        return configured
