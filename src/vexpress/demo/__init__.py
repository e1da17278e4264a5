"""``make demo`` (``vexpress-demo``): the embedded default end to end on a CPU, an application over the library.

- :mod:`vexpress.demo.run`: the orchestration (:func:`~vexpress.demo.run.run_demo` and its phases);
- :mod:`vexpress.demo.evaluate`: generating and scoring the held-out clips with a stage export, the sample video;
- :mod:`vexpress.demo.report`: the goals, the paired recipe-minus-ablation tables, the plot and ``report.{md,json}``;
- :mod:`vexpress.demo.workers`: independent jobs (training lanes, evaluations) in a few processes at once;
- :mod:`vexpress.demo.prepare`: data preparation shared with the foundation (synthetic set, tiny VAE, latents);
- :mod:`vexpress.demo.foundation`: ``vexpress-foundation``, the pretraining experiment of the embedded foundation.

Several demo reports (one per training seed) are settled by :mod:`vexpress.evaluation.study`
(``experiments/demo/study.sh``).

Nothing in :mod:`vexpress.training` imports this package.
"""
