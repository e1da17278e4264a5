"""Curriculum position / EMA / influence probe callbacks: state round-trips and the probe's definition."""

from __future__ import annotations

import pytest
import torch

from tests.training import random_batches as fakes
from tests.training.helpers import tiny_network
from vexpress.callbacks.ema import EMA
from vexpress.callbacks.stage_scheduler import StageScheduler
from vexpress.models.conditioning import DropMask
from vexpress.training.ema import EMAWeights
from vexpress.training.probe import condition_influence
from vexpress.training.stages import StageError, StageSpec


def test_curriculum_position_is_checked_on_resume():
    spec = StageSpec(name="joint", trainable=["motion_modules"])
    cb = StageScheduler(spec, 2, ["image", "audio_motion", "joint"])
    state = cb.state_dict()
    assert state == {"stage_index": 2, "stage_name": "joint", "stages": ["image", "audio_motion", "joint"]}
    StageScheduler(spec, 2).load_state_dict(state)
    with pytest.raises(StageError):
        StageScheduler(StageSpec(name="image", trainable=["v_kps_guider"]), 0).load_state_dict(state)
    # a checkpoint written before the rename (state under the old class name) is checked too
    with pytest.raises(StageError):
        StageScheduler(StageSpec(name="image", trainable=["v_kps_guider"]), 0).on_load_checkpoint(
            None, None, {"callbacks": {"CurriculumScheduler": state}})


def test_ema_weights_average_and_restore():
    p = {"w": torch.nn.Parameter(torch.zeros(3))}
    ema = EMAWeights(p, decay=0.5, warmup=False)
    with torch.no_grad():
        p["w"].fill_(1.0)
    ema.update(p)
    assert torch.allclose(ema.shadow["w"], torch.full((3,), 0.5))
    with ema.applied(p):
        assert torch.allclose(p["w"], torch.full((3,), 0.5))
    assert torch.equal(p["w"].detach(), torch.ones(3))
    other = EMAWeights(p, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1 and torch.equal(other.shadow["w"], ema.shadow["w"])
    cb = EMA(decay=0.9)
    cb.load_state_dict(ema.state_dict())
    assert cb._pending is not None  # applied when the fit starts


def test_ema_says_when_the_warmup_ramp_set_the_average(caplog):
    """The ramp reaches decay 0.99 after 890 updates: a shorter stage's average was set by the ramp (a decay change
    alone would not change the export), and the stage end says so; a stage past that point says nothing."""
    import logging

    p = {"w": torch.nn.Parameter(torch.zeros(2))}
    cb = EMA(decay=0.99)
    cb.weights = EMAWeights(p, decay=0.99)
    for _ in range(300):
        cb.weights.update(p)
    with caplog.at_level(logging.INFO, logger="vexpress.train"):
        cb.on_train_end(None, None)
    assert "ramp set this stage's average" in caplog.text and "after 890 updates" in caplog.text
    caplog.clear()
    for _ in range(590):
        cb.weights.update(p)
    with caplog.at_level(logging.INFO, logger="vexpress.train"):
        cb.on_train_end(None, None)
    assert cb.weights.current_decay() == 0.99 and "ramp" not in caplog.text


def test_influence_probe_definition():
    net = tiny_network()
    b = fakes.batch(num_frames=2)
    g = torch.Generator().manual_seed(3)
    noisy = torch.randn(2, 4, 2, 8, 8, generator=g)
    t = torch.tensor([400, 400])
    vals = condition_influence(net, noisy, t, ref_latents=b["reference_latents"], audio_windows=b["audio_windows"],
                               kps_images=b["kps_images"], lip_masks=b["lip_masks"])
    # freshly built network: zero-initialised guider and audio output -> keypoints and audio have no influence yet
    assert vals["kps"] == 0.0 and vals["audio"] == 0.0 and vals["reference"] > 0
    with torch.no_grad():
        full = net(noisy, t, ref_latents=b["reference_latents"], audio_windows=b["audio_windows"],
                   kps_images=b["kps_images"], drop=DropMask.none(2))
        noref = net(noisy, t, ref_latents=b["reference_latents"], audio_windows=b["audio_windows"],
                    kps_images=b["kps_images"], drop=DropMask(torch.ones(2), torch.zeros(2), torch.zeros(2)))
    expect = float((full - noref).pow(2).mean().sqrt() / full.pow(2).mean().sqrt())
    assert abs(vals["reference"] - expect) < 1e-6
    assert set(vals) >= {"audio_lip", "kps_lip", "reference_lip"}
