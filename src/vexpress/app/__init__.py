"""``vexpress-app``: a browser app (Gradio Blocks) for the three scenarios, on top of :mod:`vexpress.pipelines`.

    pip install -e ".[app]"
    vexpress-app weights=EXPORT_DIR                      # http://127.0.0.1:7860, this machine only
    vexpress-app weights=V_EXPRESS vae=sd-vae-ft-mse audio_encoder.path=wav2vec2-base-960h port=7861

Modules: :mod:`vexpress.app.core` (everything but the page: scenarios, settings, preview images, the per-session
file registry, one generation; no Gradio import), :mod:`vexpress.app.ui` (the page; imports Gradio),
:mod:`vexpress.app.cli` (the Hydra entry point, ``conf/app.yaml``).
"""

from __future__ import annotations
