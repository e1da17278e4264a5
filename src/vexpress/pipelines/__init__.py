"""Generation: :class:`VExpressPipeline` (photo + speech -> talking-portrait video), its parts and video writing.

Public API (imported lazily so that ``import vexpress.pipelines`` stays cheap)::

    VExpressPipeline, GenerationOutput          vexpress.pipelines.vexpress_pipeline
    Guidance                                    vexpress.pipelines.guidance
    context_windows                             vexpress.pipelines.context
    make_scheduler                              vexpress.pipelines.schedulers
    write_video, VideoWriter                    vexpress.pipelines.video_io
    median_filter_video                         vexpress.pipelines.postprocess
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VExpressPipeline": "vexpress.pipelines.vexpress_pipeline",
    "GenerationOutput": "vexpress.pipelines.vexpress_pipeline",
    "Guidance": "vexpress.pipelines.guidance",
    "context_windows": "vexpress.pipelines.context",
    "make_scheduler": "vexpress.pipelines.schedulers",
    "write_video": "vexpress.pipelines.video_io",
    "VideoWriter": "vexpress.pipelines.video_io",
    "median_filter_video": "vexpress.pipelines.postprocess",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vexpress.pipelines' has no attribute {name!r}")
