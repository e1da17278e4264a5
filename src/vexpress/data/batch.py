"""The training batch: the one place its keys, shapes and ranges are written down (consumer: training).

A batch is a dict made by the default collate of :class:`~vexpress.data.talking_face.TalkingFaceDataset`
samples. ``B`` = batch, ``F`` = frames per sample (``num_frames`` of the stage; 1 in stage 1), ``H x W`` = image
size, ``h x w`` = latent size (``H / latent_downscale``), ``D`` = audio feature size, ``P`` = 2(2p+1) = 10 audio rows
per frame.

==================  ===================  =========  ============================================================
key                 shape                range      meaning
==================  ===================  =========  ============================================================
reference_image     (B, 3, H, W)         [-1, 1]    the reference frame (outside +-margin of the targets)
target_images       (B, 3, F, H, W)      [-1, 1]    ``F`` frames, ``sample_rate`` apart
kps_images          (B, 3, F, H, W)      [0, 1]     V-Kps drawings (R = left-in-image eye, G = right, B = nose)
audio_windows       (B, F, P, D)         float      audio features of frames i-2 .. i+2 (2 rows per frame)
lip_masks           (B, 1, F, h, w)      [0, 1]     mouth box x2 at latent resolution (soft edges)
clip_id             list[str] (B)                   record id of each sample
frame_indices       (B, F) int64                    frame numbers of the targets in the clip
reference_index     (B,) int64                      frame number of the reference
flipped             (B,) bool                       horizontal flip applied
reference_latents   (B, 4, h, w)         float      with a latent cache: VAE latents x scaling factor
target_latents      (B, 4, F, h, w)      float      (then the two image keys are absent unless asked for)
caption             (B, F, 3)            [0, 1]     with ``captions``: each frame's caption (vexpress.data.captions)
==================  ===================  =========  ============================================================
"""

from __future__ import annotations

from typing import Any, Mapping, TypedDict

import torch

from vexpress.errors import ShapeError


class VideoBatch(TypedDict, total=False):
    reference_image: torch.Tensor
    target_images: torch.Tensor
    kps_images: torch.Tensor
    audio_windows: torch.Tensor
    lip_masks: torch.Tensor
    clip_id: list
    frame_indices: torch.Tensor
    reference_index: torch.Tensor
    flipped: torch.Tensor
    reference_latents: torch.Tensor
    target_latents: torch.Tensor
    caption: torch.Tensor


#: Keys every batch has.
REQUIRED_KEYS = ("kps_images", "audio_windows", "lip_masks", "clip_id")


def check_batch(batch: Mapping[str, Any], latent_downscale: int | None = None) -> tuple[int, int]:
    """Validate a batch against the table above; returns ``(B, F)``. Raises :class:`ShapeError`."""
    missing = [k for k in REQUIRED_KEYS if k not in batch]
    if missing:
        raise ShapeError(f"batch lacks {missing}")
    if "target_images" not in batch and "target_latents" not in batch:
        raise ShapeError("batch has neither target_images nor target_latents")
    if "reference_image" not in batch and "reference_latents" not in batch:
        raise ShapeError("batch has neither reference_image nor reference_latents")
    kps = batch["kps_images"]
    if kps.ndim != 5 or kps.shape[1] != 3:
        raise ShapeError(f"kps_images must be (B, 3, F, H, W), got {tuple(kps.shape)}")
    b, _, f, h, w = kps.shape
    if "target_images" in batch and tuple(batch["target_images"].shape) != (b, 3, f, h, w):
        raise ShapeError(f"target_images {tuple(batch['target_images'].shape)} != {(b, 3, f, h, w)}")
    if "reference_image" in batch and tuple(batch["reference_image"].shape) != (b, 3, h, w):
        raise ShapeError(f"reference_image {tuple(batch['reference_image'].shape)} != {(b, 3, h, w)}")
    aw = batch["audio_windows"]
    if aw.ndim != 4 or aw.shape[:2] != (b, f):
        raise ShapeError(f"audio_windows must be (B, F, P, D) with B={b}, F={f}, got {tuple(aw.shape)}")
    lm = batch["lip_masks"]
    if lm.ndim != 5 or lm.shape[:3] != (b, 1, f):
        raise ShapeError(f"lip_masks must be (B, 1, F, h, w), got {tuple(lm.shape)}")
    if latent_downscale and tuple(lm.shape[-2:]) != (h // latent_downscale, w // latent_downscale):
        raise ShapeError(f"lip_masks are {tuple(lm.shape[-2:])}, expected latent size "
                         f"{(h // latent_downscale, w // latent_downscale)}")
    if len(batch["clip_id"]) != b:
        raise ShapeError("clip_id must list one id per sample")
    return b, f
