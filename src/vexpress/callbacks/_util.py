"""Small helpers shared by the callbacks."""

from __future__ import annotations

from typing import Any, Mapping

import torch


def batch_size_of(batch: Mapping[str, Any]) -> int:
    for key in ("kps_images", "target_latents", "target_images", "audio_windows"):
        value = batch.get(key)
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    for value in batch.values():
        if isinstance(value, torch.Tensor):
            return int(value.shape[0])
    raise ValueError("cannot tell the batch size: the batch holds no tensor")


def stage_progress_of(trainer: Any) -> float:
    from vexpress.training.schedules import stage_progress

    total = int(getattr(trainer, "max_steps", -1) or -1)
    if total <= 0:
        return 0.0
    return stage_progress(int(trainer.global_step), total)


def log_metrics(pl_module: Any, values: Mapping[str, float], batch_size: int | None = None) -> None:
    """``pl_module.log`` each value (rank-local, on step); a no-op outside a running trainer."""
    for key, value in values.items():
        pl_module.log(key, float(value), on_step=True, on_epoch=False, batch_size=batch_size, sync_dist=False)
