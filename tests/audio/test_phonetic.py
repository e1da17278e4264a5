"""The phonetic audio encoder (the synthetic wav2vec2): its targets, training, strict loading, and the data cache
key that follows its weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vexpress.audio.encoders import LogMelEncoder, PhoneticEncoder, build_audio_encoder
from vexpress.audio.phonetic import (
    CONFIG,
    WEIGHTS,
    PhoneticNet,
    save_phonetic_encoder,
    train_phonetic_net,
)
from vexpress.demo.foundation import utterance_targets
from vexpress.errors import InputError, WeightsError
from vexpress.synthetic.generate import SynthConfig, clip_speech, encoder_identity, identity_ids
from vexpress.synthetic.speech import SAMPLE_RATE, VOWEL_NAMES, phonetic_targets

FRONT = {"n_mels": 80, "rate_hz": 50.0}
SMALL_NET = {"hidden": 16, "dim": 12, "kernel": 3, "layers": 1}


def _utterances(n_identities: int = 4, seconds: float = 1.0):
    cfg = SynthConfig(num_identities=n_identities, heldout_identities=1, clips_per_identity=1, seconds=seconds)
    return [clip_speech(cfg, i, 0)[1:] for i, _, _ in identity_ids(cfg)]


def test_phonetic_targets_mark_silence_and_the_loudest_vowel():
    hop = SAMPLE_RATE // 50
    n = 10 * hop
    voicing = np.zeros(n)
    weight = np.zeros((len(VOWEL_NAMES), n))
    voicing[4 * hop: 8 * hop] = 0.8
    weight[2, 4 * hop: 8 * hop] = 0.8  # vowel 2 sounds in rows 4.5 .. 7.5
    level, phone = phonetic_targets(voicing, weight, 11, hop)
    assert phone[:4].tolist() == [0, 0, 0, 0] and phone[5:8].tolist() == [3, 3, 3]
    assert level[6] == pytest.approx(0.8) and level[0] == 0 and 0 < level[4] < 0.8  # row 4 is half voiced
    assert phone[9:].tolist() == [0, 0]


def test_clip_speech_is_the_speech_of_the_generated_clip():
    from vexpress.synthetic.generate import generate_clip

    cfg = SynthConfig(num_identities=2, heldout_identities=1, clips_per_identity=1, seconds=1.0)
    _, wave, _, _ = clip_speech(cfg, 1, 0)
    assert np.array_equal(generate_clip(cfg, 1, 0)["audio"], wave)


def test_train_save_load_encode(tmp_path):
    data = utterance_targets(_utterances(), FRONT)
    net, record = train_phonetic_net(data, steps=20, batch_size=2, heldout=1, network=SMALL_NET, log_every=10)
    assert record["train_utterances"] == 3 and record["heldout"]["utterances"] == 1
    assert record["curve"][-1]["loss"] < record["curve"][0]["loss"]
    save_phonetic_encoder(tmp_path / "enc", net, FRONT, {"fit": record})
    enc = build_audio_encoder({"name": "phonetic", "path": str(tmp_path / "enc")})
    assert isinstance(enc, PhoneticEncoder) and enc.name == "phonetic12@50Hz" and enc.dim == 12
    wave = torch.from_numpy(_utterances(2)[0][0])
    feats = enc.encode(wave)
    assert feats.shape == (LogMelEncoder().encode(wave).shape[0], 12) == (enc.num_frames(wave.numel()), 12)
    with torch.no_grad():
        assert torch.allclose(feats, net(LogMelEncoder().encode(wave)[None])[0])


def test_training_is_deterministic_for_a_seed():
    data = utterance_targets(_utterances(3), FRONT)
    a, _ = train_phonetic_net(data, steps=5, batch_size=2, network=SMALL_NET, seed=3)
    b, _ = train_phonetic_net(data, steps=5, batch_size=2, network=SMALL_NET, seed=3)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])


def test_loading_is_strict(tmp_path):
    net = PhoneticNet(**SMALL_NET)
    save_phonetic_encoder(tmp_path / "enc", net, FRONT, {})
    with pytest.raises(WeightsError, match="needs its folder"):
        build_audio_encoder({"name": "phonetic"})
    with pytest.raises(WeightsError, match="not a phonetic encoder folder"):
        PhoneticEncoder(tmp_path)
    cfg = json.loads((tmp_path / "enc" / CONFIG).read_text())
    cfg["network"]["hidden"] = 32  # the config no longer describes the weights
    (tmp_path / "enc" / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="do not match"):
        PhoneticEncoder(tmp_path / "enc")
    save_phonetic_encoder(tmp_path / "enc", net, FRONT, {})
    path = tmp_path / "enc" / WEIGHTS
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="cannot be read"):
        PhoneticEncoder(tmp_path / "enc")


def test_training_refuses_mixed_lengths_and_too_little_data():
    short, long = utterance_targets(_utterances(2, 1.0)[:1] + _utterances(2, 2.0)[:1], FRONT)
    with pytest.raises(InputError, match="one length"):
        train_phonetic_net([short, long], steps=1)
    with pytest.raises(InputError, match="more than"):
        train_phonetic_net([short], steps=1, heldout=1)


def test_data_cache_key_follows_the_encoder_weights_not_its_path(tmp_path):
    net = PhoneticNet(**SMALL_NET)
    save_phonetic_encoder(tmp_path / "a", net, FRONT, {})
    save_phonetic_encoder(tmp_path / "b", net, FRONT, {})
    key = lambda p: SynthConfig(audio_encoder={"name": "phonetic", "path": str(p)}).key()  # noqa: E731
    assert key(tmp_path / "a") == key(tmp_path / "b")  # same weights elsewhere: same data
    torch.manual_seed(1)
    save_phonetic_encoder(tmp_path / "b", PhoneticNet(**SMALL_NET), FRONT, {})
    assert key(tmp_path / "a") != key(tmp_path / "b")  # refitted: new data
    assert encoder_identity({"name": "logmel"}) == {"name": "logmel"}
