import io
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from vexpress.errors import InputError, WeightsError
from vexpress.metrics.syncnet import (
    SyncNetScore,
    SyncNetV2,
    load_syncnet,
    num_sync_windows,
    resample_indices,
    scores_from_distances,
    shift_distances,
    syncnet_face_crops,
    syncnet_scores,
)

# Parameter names of syncnet_python's S (SyncNetModel.py): Sequential slots of conv / batch-norm layers.
ORIGINAL_CONV_SLOTS = {
    "netcnnaud": [0, 4, 8, 11, 14, 18], "netcnnlip": [0, 4, 8, 11, 14, 18], "netfcaud": [0, 3], "netfclip": [0, 3],
}


def test_parameter_names_are_the_original_ones():
    keys = set(SyncNetV2().state_dict())
    for seq, slots in ORIGINAL_CONV_SLOTS.items():
        for slot in slots:
            assert f"{seq}.{slot}.weight" in keys and f"{seq}.{slot}.bias" in keys
            assert f"{seq}.{slot + 1}.running_mean" in keys or slot == slots[-1] and seq.startswith("netfc")
    assert len(keys) == 102


def test_random_syncnet_state_dict_round_trip(tmp_path):
    net = SyncNetV2().eval()
    torch.save(net.state_dict(), tmp_path / "syncnet_v2.model")
    loaded = load_syncnet(tmp_path / "syncnet_v2.model")
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    # a SyncNetInstance-style prefix is accepted too
    torch.save({f"__S__.{k}": v for k, v in net.state_dict().items()}, tmp_path / "prefixed.model")
    load_syncnet(tmp_path / "prefixed.model")
    with torch.no_grad():
        assert loaded.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert loaded.forward_lip(torch.rand(1, 3, 5, 224, 224) * 255).shape == (1, 1024)


def test_pickled_module_loads_through_the_allow_list(tmp_path):
    fake = types.ModuleType("SyncNetModel")
    fake.S = type("S", (SyncNetV2,), {"__module__": "SyncNetModel"})
    sys.modules["SyncNetModel"] = fake
    try:
        original = fake.S().eval()
        torch.save(original, tmp_path / "whole.model")
    finally:
        del sys.modules["SyncNetModel"]
    loaded = load_syncnet(tmp_path / "whole.model")
    torch.testing.assert_close(loaded.state_dict()["netfclip.3.weight"], original.state_dict()["netfclip.3.weight"])


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_arbitrary_pickles_are_refused(tmp_path, capsys):
    buf = io.BytesIO()
    pickle.dump({"netfcaud.0.weight": _Evil()}, buf)
    (tmp_path / "evil.model").write_bytes(buf.getvalue())
    with pytest.raises(WeightsError, match="syncnet"):
        load_syncnet(tmp_path / "evil.model")
    assert "must never run" not in capsys.readouterr().out
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.model")
    with pytest.raises(WeightsError, match="do not match"):
        load_syncnet(tmp_path / "other.model")
    with pytest.raises(WeightsError, match="metrics.syncnet.weights_path"):
        load_syncnet(tmp_path / "missing.model")


@pytest.mark.parametrize("shift", [-4, 0, 3])
def test_offset_search_on_synthetic_embeddings(shift):
    g = torch.Generator().manual_seed(0)
    video = torch.randn(60, 32, generator=g)
    audio = torch.roll(video, shifts=shift, dims=0)  # audio[j] = video[j - shift]: video i matches audio i + shift
    scores = scores_from_distances(shift_distances(video, audio, 15), 15)
    assert scores.offset == -shift
    assert scores.lse_c > 0
    assert len(scores.curve) == 31


class BrightnessEnergyNet(nn.Module):
    """A real, hand-built sync model: video embedding = per-frame brightness of the 5 frames, audio embedding = the
    MFCC log-energy (c0) averaged per video frame; both z-scored. In sync, the two 5-vectors coincide."""

    def forward_lip(self, x):  # (N, 3, 5, H, W)
        v = x.mean(dim=(1, 3, 4))
        return (v - v.mean(1, keepdim=True)) / (v.std(1, keepdim=True) + 1e-6)

    def forward_aud(self, x):  # (N, 1, 13, 20)
        a = x[:, 0, 0, :].reshape(x.shape[0], 5, 4).mean(-1)
        return (a - a.mean(1, keepdim=True)) / (a.std(1, keepdim=True) + 1e-6)


@pytest.mark.parametrize("delay", [0, 3, -2])
def test_syncnet_scoring_finds_a_known_audio_shift(delay):
    rng = np.random.default_rng(7)
    frames = 90
    env = rng.uniform(0.05, 1.0, size=frames + 20)
    video_env = env[10: 10 + frames]
    audio_env = env[10 - delay: 10 - delay + frames]  # audio frame t carries the video event of frame t - delay
    crops = np.repeat((video_env * 200 + 20)[:, None, None, None], 3, axis=-1) * np.ones((1, 24, 24, 3))
    wave = rng.normal(size=frames * 640) * np.repeat(audio_env, 640) * 0.2
    scores = syncnet_scores(BrightnessEnergyNet(), crops.astype(np.uint8), wave)
    assert scores.num_windows == num_sync_windows(frames, len(wave)) == frames - 5
    assert scores.offset == -delay  # audio later than the video -> negative offset (audio lags)
    assert scores.lse_c > 0.5


def test_short_clip_is_a_clear_error():
    with pytest.raises(InputError, match="too short for SyncNet"):
        syncnet_scores(BrightnessEnergyNet(), np.zeros((4, 8, 8, 3), np.uint8), np.zeros(640 * 4))


def test_metric_wrapper_averages_clips():
    m = SyncNetScore(BrightnessEnergyNet())
    rng = np.random.default_rng(0)
    for _ in range(2):
        env = rng.uniform(0.1, 1, 40)
        crops = np.repeat((env * 200)[:, None, None, None], 3, -1) * np.ones((1, 8, 8, 3))
        m.update(crops.astype(np.uint8), rng.normal(size=40 * 640) * np.repeat(env, 640) * 0.2)
    out = m.compute()
    assert int(out["clips"]) == 2 and float(out["lse_c"]) > 0
    assert m.state_dict() == {} or all("net" not in k for k in m.state_dict())


def test_face_crops_follow_the_syncnet_rule():
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[..., 0] = 255  # pure red in RGB
    boxes = np.tile([[150.0, 60.0, 199.0, 110.0]], (5, 1))  # face near the right edge: padding shows up
    crops = syncnet_face_crops(np.stack([frame] * 5), boxes)
    assert crops.shape == (5, 224, 224, 3) and crops.dtype == np.uint8
    assert crops[0, 112, 50, 2] == 255 and crops[0, 112, 50, 0] == 0  # BGR: red lands in channel 2
    assert (crops[0, :, -5:] == 110).all()  # grey padding beyond the frame's right edge


def test_resample_indices_to_25fps():
    np.testing.assert_array_equal(resample_indices(10, 25.0), np.arange(10))
    idx = resample_indices(30, 30.0)
    assert len(idx) == 25 and idx[0] == 0 and idx[-1] == 29 and np.all(np.diff(idx) >= 1)
    slow = resample_indices(20, 20.0)
    assert len(slow) == 25 and np.all(np.diff(slow) >= 0) and (np.diff(slow) == 0).sum() == 5
