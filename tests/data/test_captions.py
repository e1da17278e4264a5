"""Captions of synthetic frames (the foundation's cross-attention pretraining): the frames' exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from vexpress.errors import InputError


def test_captions_of_synthetic_frames_are_their_ground_truth(tiny_set):
    from vexpress.data.captions import NUM_VOWEL_CLASSES, frame_captions
    from vexpress.data.records import load_manifest
    from vexpress.data.talking_face import TalkingFaceDataset

    records = load_manifest(tiny_set, split="train")
    ds = TalkingFaceDataset(records, num_frames=6, image_size=32, latent_downscale=4, reference_margin=10,
                            captions=True, seed=3)
    s = ds[2]
    rec = next(r for r in records if r.id == s["clip_id"])
    ids = s["frame_indices"].numpy()
    cap = s["caption"].numpy()
    assert cap.shape == (6, 3) and cap.dtype == np.float32
    np.testing.assert_array_equal(cap[:, :2], rec.gt_mouth.numpy()[ids])
    vowel = rec.gt_vowel.numpy()[ids]
    np.testing.assert_allclose(cap[:, 2], (vowel + 1) / NUM_VOWEL_CLASSES)
    assert ((cap >= 0) & (cap <= 1)).all()
    assert "caption" not in TalkingFaceDataset(records, num_frames=6, image_size=32, latent_downscale=4,
                                               reference_margin=10, seed=3)[2]  # off by default

    class NoTruth:  # a real clip: no gt_mouth / gt_vowel tensors
        id = "real_clip"

        @property
        def gt_mouth(self):
            raise InputError("clip real_clip has no 'gt_mouth' tensor")

    with pytest.raises(InputError, match="real_clip.*synthetic"):
        frame_captions(NoTruth(), np.arange(3))
