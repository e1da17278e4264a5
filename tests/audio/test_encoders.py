"""Audio encoders: the weight-free log-mel encoder and wav2vec2 from a local folder (tiny model built here)."""

from __future__ import annotations

import pytest
import torch

from vexpress.audio import LogMelEncoder, Wav2Vec2Encoder, build_audio_encoder
from vexpress.errors import InputError, WeightsError


def _speechy(seconds=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16000 * seconds)) / 16000
    return 0.3 * torch.sin(2 * torch.pi * 180 * t) * (1 + 0.5 * torch.sin(2 * torch.pi * 3 * t)) + \
        0.01 * torch.randn(t.shape, generator=g)


def test_logmel_shape_rate_determinism():
    enc = LogMelEncoder()
    wav = _speechy(2.0)
    f1, f2 = enc.encode(wav), enc.encode(wav.clone())
    assert f1.shape == (1 + wav.numel() // 320, 80) and f1.dtype == torch.float32
    assert enc.dim == 80 and enc.rate_hz == 50 and "logmel" in enc.name
    assert torch.equal(f1, f2)
    assert torch.isfinite(f1).all()


def test_logmel_keeps_loudness():
    enc = LogMelEncoder()
    wav = _speechy(1.0)
    assert enc.encode(wav).mean() > enc.encode(wav * 0.1).mean() + 0.3
    silence = enc.encode(torch.zeros(16000))
    assert silence.max() < -1.0


def test_logmel_rejects_bad_input():
    enc = LogMelEncoder()
    with pytest.raises(InputError):
        enc.encode(torch.zeros(2, 1000))
    with pytest.raises(InputError):
        enc.encode(torch.zeros(100))


def test_builder():
    assert isinstance(build_audio_encoder(None), LogMelEncoder)
    assert build_audio_encoder({"name": "logmel", "n_mels": 40}).dim == 40
    with pytest.raises(WeightsError):
        build_audio_encoder({"name": "wav2vec2"})
    with pytest.raises(InputError):
        build_audio_encoder("nonsense")


def test_wav2vec2_missing_folder(tmp_path):
    with pytest.raises(WeightsError, match="config.json"):
        Wav2Vec2Encoder(tmp_path / "none")


def test_wav2vec2_tiny_local(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                         conv_dim=(16, 16, 16, 16, 16, 16, 16), num_feat_extract_layers=7,
                         num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    Wav2Vec2Model(cfg).save_pretrained(tmp_path / "w2v")
    enc = build_audio_encoder({"name": "wav2vec2", "path": str(tmp_path / "w2v")})
    wav = _speechy(1.0)
    feats = enc.encode(wav)
    assert enc.dim == 32 and feats.shape[1] == 32
    assert abs(feats.shape[0] - 49) <= 1  # ~50 Hz
    # input normalisation: the scale of the waveform does not matter (as with Wav2Vec2Processor)
    assert torch.allclose(feats, enc.encode(wav * 3.0), atol=1e-4)
