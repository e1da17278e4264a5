"""``vexpress-train``: run a training curriculum (one or more stages), each stage in its own ``trainer.fit``.

    vexpress-train experiment=smoke
    vexpress-train curriculum=vexpress dropout=paper trainer=gpu
    vexpress-train curriculum=single stage=joint stage.init_from=/path/to/export
    vexpress-train -m dropout=cfg_only,paper

The loop is :class:`vexpress.training.runner.CurriculumRunner` (how every stage's config is composed, what resumes
and what is skipped: see there). Re-running with the same output folder (``hydra.run.dir=...``) resumes; a rerun of
a finished run trains nothing, keeps its ``train_summary.json`` and exits 0.
"""

from __future__ import annotations

import json
import logging

from vexpress.cli._common import hydra_main, tidy_lightning_logging, user_errors

log = logging.getLogger("vexpress.train")


@user_errors
def task(cfg) -> None:
    from vexpress.training.runner import CurriculumRunner

    tidy_lightning_logging()  # after Lightning is imported (by the runner), before the first fit
    runner = CurriculumRunner(cfg)
    results = runner.run()
    if not runner.write_summary(results):
        # nothing was trained: the run's records stay exactly as the run that trained it wrote them
        log.info("run already finished: every stage is exported; kept %s", runner.summary_path)
        print(f"run already finished: every stage of {runner.root} is exported (summary: {runner.summary_path})")
        return
    print(json.dumps([{k: r.get(k) for k in ("stage", "global_step", "export")} for r in results], indent=1))


def main() -> None:
    hydra_main("train", task, "vexpress-train")


if __name__ == "__main__":  # pragma: no cover
    main()
