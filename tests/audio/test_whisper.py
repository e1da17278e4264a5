"""The Whisper audio encoder with a tiny random Whisper saved to a temp folder: rows at 50 Hz for any length and
sample rate, chunking over the 30 s window, exact frame alignment, the official-weights refusal, and a tiny
training run + generation end to end on its features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vexpress.audio import WhisperEncoder, build_audio_encoder, load_audio, save_wav
from vexpress.audio.encoders import check_encoder_width, check_official_encoder
from vexpress.audio.windows import audio_windows
from vexpress.errors import InputError, ShapeError, WeightsError

D_MODEL = 32
LAYERS = 2


def save_tiny_whisper(folder, d_model: int = D_MODEL, layers: int = LAYERS, extractor: bool = True, seed: int = 0):
    """A random Whisper with the real 30 s / 1500-position front end and tiny widths (about 0.4 MB)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    cfg = WhisperConfig(d_model=d_model, encoder_layers=layers, encoder_attention_heads=2, encoder_ffn_dim=2 * d_model,
                        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=2 * d_model, vocab_size=64,
                        num_mel_bins=80, max_source_positions=1500, max_target_positions=16, pad_token_id=0,
                        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    torch.manual_seed(seed)
    WhisperModel(cfg).eval().save_pretrained(folder)
    if extractor:
        WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    return save_tiny_whisper(tmp_path_factory.mktemp("whisper") / "whisper-tiny-test")


@pytest.fixture(scope="module")
def encoder(whisper_dir):
    return build_audio_encoder({"name": "whisper", "path": str(whisper_dir)})


def _noise(seconds: float, rate: int = 16000, seed: int = 0, level: float = 0.02) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return level * torch.randn(int(round(seconds * rate)), generator=g)


def _speechy(seconds: float, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    tone = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 5))
    return (0.2 * tone * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def _burst(wav: torch.Tensor, start_s: float, length_s: float = 0.06, amp: float = 0.4) -> torch.Tensor:
    """Add a 1 kHz tone burst starting exactly at ``start_s``."""
    a, n = int(round(start_s * 16000)), int(round(length_s * 16000))
    t = torch.arange(n) / 16000
    out = wav.clone()
    out[a:a + n] += amp * torch.sin(2 * math.pi * 1000 * t)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# shape, rate, crop, chunking
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds", [0.5, 3.0, 31.0])
def test_rows_at_50_hz_for_any_length(encoder, seconds):
    wav = _noise(seconds)
    feats = encoder.encode(wav)
    n = math.ceil((wav.numel() - 160) / 320)
    assert feats.shape == (n, D_MODEL) and feats.dtype == torch.float32
    assert encoder.num_rows(wav.numel()) == n
    assert abs(n * 0.02 - seconds) <= 0.01  # N rows of 20 ms span the utterance
    assert torch.isfinite(feats).all()
    # aligned to video frames as the wav2vec2 path: 2 rows per frame, 10-row windows for any fps
    for fps in (25.0, 30.0):
        frames = round(seconds * fps)
        assert audio_windows(feats, frames).shape == (frames, 10, D_MODEL)


def test_short_audio_is_padded_then_cropped(encoder):
    """0.5 s goes through one zero-padded 30 s window; the rows past the real audio are not returned, and the result
    is the same rows as a 1 s clip whose second half is silence (the padding)."""
    wav = _noise(0.5)
    short = encoder.encode(wav)
    padded = encoder.encode(torch.cat([wav, torch.zeros(8000)]))
    assert short.shape[0] == 25 and padded.shape[0] == 50
    assert torch.allclose(short, padded[:25], atol=1e-5)
    assert torch.equal(short, encoder.encode(wav.clone()))  # deterministic


def test_long_audio_windows_join_on_the_same_grid(encoder):
    """31 s = two windows: rows 0..1299 come from the first 30 s window, rows 1300.. from a window starting 2 s
    (100 rows) earlier; both equal what the corresponding single-window encodings give."""
    wav = _noise(31.0, seed=1)
    feats = encoder.encode(wav)
    first = encoder.encode(wav[:480000 + 160])  # the first window on its own
    assert torch.allclose(feats[:1300], first[:1300], atol=1e-5)
    second = encoder.encode(wav[1200 * 320:])  # audio from the second window's start
    assert torch.allclose(feats[1300:], second[100:], atol=1e-5)
    assert not torch.allclose(feats[1300:1400], first[1300:1400], atol=1e-3)  # really another window


@pytest.mark.parametrize("rate", [16000, 22050, 44100])
def test_sample_rates(encoder, tmp_path, rate):
    """Files at any rate are resampled to 16 kHz on load; ``encode(..., sample_rate=)`` resamples the same way."""
    seconds = 3.0
    native = _speechy(seconds, rate)
    path = save_wav(tmp_path / f"a{rate}.wav", native, rate)
    wav16 = load_audio(path)
    feats = encoder.encode(wav16)
    assert feats.shape == (encoder.num_rows(wav16.numel()), D_MODEL)
    assert abs(feats.shape[0] * 0.02 - seconds) <= 0.02
    direct = encoder.encode(torch.from_numpy(native), sample_rate=rate)
    assert direct.shape == feats.shape
    assert torch.allclose(direct, feats, atol=2e-3)  # the file only adds 16-bit quantisation


# ---------------------------------------------------------------------------------------------------------------------
# frame alignment: layer 0 (front end + positions, no attention) is local in time, so an event shows where it is
# ---------------------------------------------------------------------------------------------------------------------
def test_an_event_lands_on_its_rows_and_video_frames(whisper_dir):
    enc = WhisperEncoder(whisper_dir, layers=0)
    assert enc.dim == D_MODEL and enc.name.endswith("@L0")
    # both clips share the loudest events (Whisper's log-mel floor is relative to each window's maximum), one per
    # window, so the probe events change nothing but their own rows
    base = _burst(_burst(_noise(31.0, seed=2), 0.2, amp=0.9), 30.2, amp=0.9)
    events = {1.0: 50, 28.0: 1400}  # start (s) -> first row whose centre (j + 0.5) * 20 ms is at/after it
    probe = base
    for start in events:
        probe = _burst(probe, start)
    a, b = enc.encode(base), enc.encode(probe)
    change = (a - b).norm(dim=1)
    changed = torch.nonzero(change > 1e-5).flatten()
    rows = torch.arange(a.shape[0]).float()
    for start, row in events.items():
        near = changed[(changed - row).abs() < 20]
        # the 60 ms burst covers rows row..row+2; the front end reaches 520 samples (1.6 rows) further each way
        assert near.min() >= row - 2 and near.max() <= row + 4, (start, near.tolist())
        w = change[row - 10:row + 10]
        centroid = float((w * rows[row - 10:row + 10]).sum() / w.sum())
        # the burst's centre, start + 30 ms, is the centre of row `row + 1`: a 10 ms shift would be half a row
        assert abs(centroid - (row + 1)) < 0.3, (start, centroid)
    assert changed.numel() == sum(((changed - r).abs() < 20).sum().item() for r in events.values())  # no others
    # at the video rate (30 fps: 1550 rows resampled to 1860), the change sits on the frames of 1.00-1.06 s, centred
    # on 1.03 s = frame 30.4 in frame-centre units, exactly as the resampling of wav2vec2 features places it
    fa, fb = audio_windows(a, 31 * 30), audio_windows(b, 31 * 30)
    own = (fa - fb)[:, 4:6].norm(dim=(1, 2))  # each frame's own two rows (window rows 4, 5 with p=2)
    frames = torch.nonzero(own[:120] > 1e-5).flatten()
    assert frames.min() >= 28 and frames.max() <= 33, frames.tolist()  # rows 48..54, interpolated
    w = own[20:40]
    centroid = float((w * torch.arange(20, 40).float()).sum() / w.sum())
    assert abs(centroid - (1.03 * 30 - 0.5)) < 0.3, centroid


# ---------------------------------------------------------------------------------------------------------------------
# layers, names, errors
# ---------------------------------------------------------------------------------------------------------------------
def test_layers_names_and_width(whisper_dir, encoder):
    assert encoder.dim == D_MODEL and encoder.name == f"whisper:{whisper_dir.name}" and encoder.rate_hz == 50
    both = build_audio_encoder({"name": "whisper", "path": str(whisper_dir), "layers": [1, -1]})
    assert both.dim == 2 * D_MODEL and both.name.endswith("@L1+L2")
    wav = _noise(1.0)
    f = both.encode(wav)
    assert f.shape == (50, 2 * D_MODEL)
    assert torch.allclose(f[:, D_MODEL:], encoder.encode(wav), atol=1e-5)  # -1 = last_hidden_state
    assert WhisperEncoder(whisper_dir, layers="0,2").layers == (0, 2)
    assert WhisperEncoder(whisper_dir)._load() is encoder._load()  # one load per process (synthetic: one per clip)
    with pytest.raises(InputError, match="layers"):
        WhisperEncoder(whisper_dir, layers=3)
    with pytest.raises(InputError, match="layers"):
        WhisperEncoder(whisper_dir, layers=[])


def test_works_without_a_saved_feature_extractor(tmp_path, encoder):
    folder = save_tiny_whisper(tmp_path / "w", extractor=False)
    wav = _noise(1.0)
    assert torch.allclose(WhisperEncoder(folder).encode(wav), encoder.encode(wav), atol=1e-5)


def test_bad_folders_are_one_line_weights_errors(tmp_path, whisper_dir):
    with pytest.raises(WeightsError, match="needs a local path"):
        build_audio_encoder({"name": "whisper"})
    with pytest.raises(InputError, match=r"\['layers'\] do not apply to the wav2vec2 encoder"):
        build_audio_encoder({"name": "wav2vec2", "path": str(whisper_dir), "layers": [1]})
    with pytest.raises(WeightsError, match="config.json"):
        WhisperEncoder(tmp_path / "missing")
    (tmp_path / "w2v").mkdir()
    (tmp_path / "w2v" / "config.json").write_text('{"model_type": "wav2vec2"}')
    with pytest.raises(WeightsError, match="not Whisper"):
        WhisperEncoder(tmp_path / "w2v")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text((whisper_dir / "config.json").read_text())
    with pytest.raises(WeightsError, match="cannot load Whisper") as err:
        WhisperEncoder(tmp_path / "broken").encode(_noise(1.0))
    assert "\n" not in str(err.value)


def test_width_check_and_official_refusal(encoder, tmp_path):
    check_encoder_width(encoder, D_MODEL)
    with pytest.raises(ShapeError, match="32-d features") as err:
        check_encoder_width(encoder, 768)
    assert "\n" not in str(err.value)
    check_official_encoder({"name": "wav2vec2", "path": "x"})
    check_official_encoder(str(tmp_path))  # a bare folder is read as wav2vec2 by the official route
    for other in (encoder, {"name": "whisper", "path": "x"}, "logmel"):
        with pytest.raises(WeightsError, match="official V-Express weights only work with the wav2vec2"):
            check_official_encoder(other)


def test_official_weights_route_refuses_whisper_before_reading_weights(whisper_dir, tmp_path):
    from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

    official = tmp_path / "v-express"  # a folder of official files (never read: the check comes first)
    official.mkdir()
    spec = {"name": "whisper", "path": str(whisper_dir)}
    with pytest.raises(WeightsError, match="only work with the wav2vec2") as err:
        VExpressPipeline.from_weights(official, vae=str(tmp_path), audio_encoder=spec)
    assert "\n" not in str(err.value)


def test_pipeline_refuses_a_model_of_another_width(encoder):
    from tests.helpers.tiny import tiny_net
    from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

    with pytest.raises(WeightsError, match="32-d features but the model was trained on 80-d"):
        VExpressPipeline(tiny_net(audio_dim=80), None, encoder, device="cpu", dtype=torch.float32)


# ---------------------------------------------------------------------------------------------------------------------
# end to end: generation, and a tiny training run whose export then generates with the same encoder
# ---------------------------------------------------------------------------------------------------------------------
def _photo_and_kps():
    photo = np.full((64, 64, 3), 90, np.uint8)
    photo[20:44, 16:48] = 170
    return photo, np.array([[24.0, 26.0], [40.0, 26.0], [32.0, 36.0]], np.float32)


@pytest.mark.slow
def test_generation_with_whisper_features(encoder, tmp_path):
    from tests.helpers.tiny import tiny_net, tiny_vae
    from vexpress.data.video import probe_video
    from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

    pipe = VExpressPipeline(tiny_net(audio_dim=encoder.dim), tiny_vae(), encoder, device="cpu", dtype=torch.float32)
    audio = save_wav(tmp_path / "speech.wav", _speechy(1.2, 22050), 22050)
    photo, kps = _photo_and_kps()
    out = pipe(photo, audio, reference_kps=kps, fps=5, height=64, width=64, num_inference_steps=1, context_frames=8,
               context_overlap=2, output_path=tmp_path / "v.mp4", progress=False)
    assert out.num_frames == 6  # round(1.2 s x 5 fps)
    assert probe_video(tmp_path / "v.mp4").num_frames == 6


@pytest.mark.slow
def test_tiny_training_run_and_its_export_generate(whisper_dir, tmp_path):
    """Synthetic clips encoded with Whisper -> 2 training steps -> the export records the encoder -> a video."""
    from tests.training import cli_helpers as ch
    from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

    stage = ["experiment=smoke", "curriculum=single", "stage=joint", "stage.num_frames=2", "stage.batch_size=2",
             "trainer.max_steps=2", "callbacks.model_checkpoint.every_n_train_steps=2",
             "callbacks.influence_probe.every_n_steps=2"]
    audio = [f"++data.synthetic.audio_encoder={{name:whisper,path:'{whisper_dir}'}}",
             f"data.audio_dim={D_MODEL}", "data.audio_encoder_info=null"]
    cache = tmp_path / "cache"
    res = ch.run(ch.overrides(tmp_path / "run", stage, cache) + audio)
    assert res[0]["global_step"] == 2
    net = res[0]["model"].net
    assert net.config.audio_embedding_dim == D_MODEL
    pipe = VExpressPipeline.from_export(res[0]["export"], device="cpu", dtype="fp32")
    assert isinstance(pipe.audio_encoder, WhisperEncoder) and pipe.audio_encoder.path == whisper_dir
    photo, kps = _photo_and_kps()
    out = pipe(photo, (_speechy(0.8), 16000), reference_kps=kps, fps=10, height=64, width=64,
               num_inference_steps=1, context_frames=8, context_overlap=2, progress=False)
    assert out.num_frames == 8
    # features of another width than the model's are refused with one line naming the fix
    with pytest.raises(InputError, match="data.audio_dim=32"):
        ch.run(ch.overrides(tmp_path / "mismatch", stage, cache) + audio[:1]
               + ["data.audio_dim=80", "data.audio_encoder_info=null"])


@pytest.mark.slow
def test_preprocess_cli_stores_whisper_features(whisper_dir, tmp_path):
    """``vexpress-preprocess ++preprocess.audio_encoder={name: whisper, path: DIR}``: the record's features are the
    encoder's rows for the clip's audio, under the encoder's name."""
    from hydra import compose, initialize_config_dir

    from tests.preprocessing.conftest import make_video
    from vexpress.cli._common import config_path
    from vexpress.cli.preprocess import run
    from vexpress.data.records import load_manifest

    (tmp_path / "in").mkdir()
    make_video(tmp_path / "in" / "a_1.mp4", seconds=1.2, size=160, seed=1)
    with initialize_config_dir(config_dir=config_path(), version_base="1.3"):
        cfg = compose("preprocess", overrides=[f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "workers=1",
                                               "progress=false", "preprocess.min_face_size=40",
                                               f"++preprocess.audio_encoder={{name:whisper,path:'{whisper_dir}'}}"])
    report = run(cfg)
    assert report["kept"] == 1
    rec = load_manifest(tmp_path / "out")[0]
    enc = WhisperEncoder(whisper_dir)
    assert rec.audio_encoder == enc.name
    assert rec.audio_features.shape == (enc.num_rows(rec.audio.numel()), D_MODEL)
    assert torch.allclose(rec.audio_features, enc.encode(rec.audio), atol=1e-5)
