"""``vexpress-demo`` (``make demo``): the embedded default end to end on a CPU.

Synthetic benchmark -> tiny VAE -> the paper's progressive recipe and two ablations -> held-out evaluation with
the shuffled-audio control -> sample video -> ``report.{md,json,png}`` under ``output_dir`` (default
``demo_output/``). Everything is cached, so a second run only redoes what changed. Options: ``conf/demo.yaml``
(e.g. ``vexpress-demo output_dir=/tmp/demo eval.clips=4``); the training numbers live in
``conf/experiment/demo_*.yaml``.
"""

from __future__ import annotations

from vexpress.cli._common import config_path, user_errors


@user_errors
def task(cfg) -> None:
    from vexpress.training.demo import run_demo

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
    import hydra

    hydra.main(version_base="1.3", config_path=config_path(), config_name="demo")(task)()


if __name__ == "__main__":  # pragma: no cover
    main()
