"""The synthetic talking-face benchmark (weight-free, deterministic by seed): the embedded default data.

    from vexpress.synthetic import SynthConfig, ensure_synthetic_dataset
    root = ensure_synthetic_dataset(SynthConfig())          # cached by config hash; ~30 s the first time
    records = vexpress.data.records.load_manifest(root, split="train")

    from vexpress.synthetic.measure import measure_clip, summarize
    m = measure_clip(generated_frames, record, indices)     # mouth / pose / appearance measured from frames

Modules: :mod:`~vexpress.synthetic.face` (identities, pose, renderer, exact keypoints),
:mod:`~vexpress.synthetic.speech` (audio synthesis and the audio -> mouth function),
:mod:`~vexpress.synthetic.generate` (clips -> dataset folder, cache), :mod:`~vexpress.synthetic.measure`.
"""

from __future__ import annotations

from vexpress.synthetic.generate import SynthConfig, ensure_synthetic_dataset, generate_dataset

__all__ = ["SynthConfig", "ensure_synthetic_dataset", "generate_dataset"]
