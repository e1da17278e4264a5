"""Per-frame captions of synthetic clips: what a captioner would say about a frame, as numbers.

The embedded foundation trains its cross-attention (``attn2``) against captions, as SD1.5 trained its cross-attention
against text (:mod:`vexpress.models.caption`). A synthetic frame's caption describes its expression, the part of the
frame that neither the reference image nor the keypoints fix: how far the mouth is open, how wide, and which vowel
shapes it (the words "mouth open", "smiling" of a photo's caption). Values are in [0, 1]:

    opening   ``gt_mouth[:, 0]``
    width     ``gt_mouth[:, 1]``
    vowel     ``(gt_vowel + 1) / NUM_VOWEL_CLASSES`` (0 = silent)

Only synthetic records have these tensors (``docs/data.md``); real clips have no captions.
"""

from __future__ import annotations

import numpy as np

from vexpress.errors import InputError

#: the attributes of a caption, in order
CAPTION_ATTRIBUTES = ("opening", "width", "vowel")
#: silence + the synthetic world's five vowels (vexpress.synthetic.speech.VOWEL_NAMES)
NUM_VOWEL_CLASSES = 5


def frame_captions(record, frames: np.ndarray) -> np.ndarray:
    """(F, 3) float32 captions of ``record``'s frames ``frames`` (indices)."""
    try:
        mouth = record.gt_mouth.numpy()[frames]
        vowel = record.gt_vowel.numpy()[frames]
    except InputError as e:
        raise InputError(f"captions need the synthetic ground truth (gt_mouth, gt_vowel), which clip {record.id} "
                         "lacks; train with captions only on synthetic data") from e
    return captions_from_mouth(mouth, vowel)


def captions_from_mouth(mouth: np.ndarray, vowel: np.ndarray) -> np.ndarray:
    """(F, 3) float32 captions from per-frame mouth (F, 2) [opening, width] and vowel index (F,) (-1 = silent), the
    arrays :func:`vexpress.synthetic.speech.mouth_track` makes."""
    return np.concatenate([np.asarray(mouth, np.float32),
                           ((np.asarray(vowel).astype(np.float32) + 1.0) / NUM_VOWEL_CLASSES)[:, None]], axis=1)
