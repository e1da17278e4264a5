"""Audio encoders: 16 kHz mono waveform (S,) -> per-utterance features (N, D).

Every encoder has ``name`` (recorded next to cached features so a cache made with another encoder is never
reused), ``dim`` (D) and ``rate_hz`` (feature rows per second, about 50 for both encoders), and
``encode(waveform_16k) -> (N, D) float32``. The network does not care about the rate: features are resampled to
two rows per video frame by :func:`vexpress.audio.windows.audio_windows`.

- :class:`LogMelEncoder`: weight-free log-mel spectrogram (80 bands, 25 ms window, 20 ms hop = 50 Hz like
  wav2vec2), with a fixed normalisation (the same affine map for every utterance, so loudness differences survive).
  The embedded default and the tests use it.
- :class:`Wav2Vec2Encoder`: ``transformers`` ``Wav2Vec2Model`` from a local folder (the official
  ``facebook/wav2vec2-base-960h``), ``last_hidden_state``, with the processor's zero-mean/unit-variance input
  normalisation, as the official ``extract_audio_embeddings.py``.
- :class:`vexpress.audio.whisper.WhisperEncoder` (``name: whisper``): the encoder of a local multilingual Whisper
  checkpoint (any size), exactly 50 rows per second; the official release stays wav2vec2-only
  (:func:`check_official_encoder`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

import torch

from vexpress.audio.io import SAMPLE_RATE, check_waveform
from vexpress.audio.whisper import WhisperEncoder
from vexpress.errors import InputError, ShapeError, WeightsError


@runtime_checkable
class AudioEncoder(Protocol):
    name: str
    dim: int
    rate_hz: float

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:  # (S,) 16 kHz -> (N, D)
        ...


class LogMelEncoder:
    """Weight-free log-mel features, deterministic and normalised with fixed constants.

    Args:
        n_mels: mel bands (D).
        rate_hz: feature rows per second (hop = 16000 / rate_hz samples).
        win_ms: analysis window length.
        f_min, f_max: band limits in Hz.
        log_offset, log_scale: fixed normalisation ``(ln(mel_power + 1e-6) - offset) / scale``; the defaults map
            speech at ordinary levels to roughly zero mean and unit variance, and silence to about -1.5.
    """

    def __init__(self, n_mels: int = 80, rate_hz: float = 50.0, win_ms: float = 25.0, f_min: float = 40.0,
                 f_max: float = 7600.0, log_offset: float = -7.0, log_scale: float = 4.0):
        if n_mels < 1 or rate_hz <= 0 or win_ms <= 0:
            raise InputError("LogMelEncoder needs n_mels >= 1, rate_hz > 0 and win_ms > 0")
        self.n_mels = int(n_mels)
        self.rate_hz = float(rate_hz)
        self.hop = int(round(SAMPLE_RATE / self.rate_hz))
        self.win = int(round(SAMPLE_RATE * win_ms / 1000.0))
        self.n_fft = 1 << max(0, (self.win - 1)).bit_length()
        self.f_min, self.f_max = float(f_min), float(f_max)
        self.log_offset, self.log_scale = float(log_offset), float(log_scale)
        self._fb: torch.Tensor | None = None

    @property
    def name(self) -> str:
        return f"logmel{self.n_mels}@{self.rate_hz:g}Hz"

    @property
    def dim(self) -> int:
        return self.n_mels

    def _filterbank(self) -> torch.Tensor:
        if self._fb is None:
            import torchaudio.functional as AF

            self._fb = AF.melscale_fbanks(self.n_fft // 2 + 1, self.f_min, self.f_max, self.n_mels, SAMPLE_RATE,
                                          norm="slaney", mel_scale="slaney")
        return self._fb

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """(S,) 16 kHz waveform -> (1 + S // hop, n_mels) float32."""
        wav = check_waveform(waveform).cpu()
        window = torch.hann_window(self.win, dtype=torch.float32)
        spec = torch.stft(wav, n_fft=self.n_fft, hop_length=self.hop, win_length=self.win, window=window,
                          center=True, pad_mode="constant", return_complex=True)
        power = spec.abs().pow(2).T  # (N, F)
        mel = power @ self._filterbank()  # (N, n_mels)
        return ((torch.log(mel + 1e-6) - self.log_offset) / self.log_scale).float().contiguous()

    def num_frames(self, num_samples: int) -> int:
        return 1 + num_samples // self.hop

    def __repr__(self) -> str:
        return f"LogMelEncoder(n_mels={self.n_mels}, rate_hz={self.rate_hz:g})"


class Wav2Vec2Encoder:
    """wav2vec2 ``last_hidden_state`` from a local model folder (``config.json`` + weights); never downloads.

    Args:
        path: folder holding a transformers ``Wav2Vec2Model`` (e.g. ``facebook/wav2vec2-base-960h``).
        device: where to run the model.
        dtype: model dtype (the official training features are fp32).
        normalize: zero-mean unit-variance input normalisation; ``None`` reads ``do_normalize`` from the folder's
            ``preprocessor_config.json`` (True when absent), as ``Wav2Vec2Processor`` does.
        max_chunk_s: utterances longer than this are encoded in overlapping chunks to bound memory (None = whole).
    """

    rate_hz = 50.0

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu",
                 dtype: torch.dtype | str = torch.float32, normalize: bool | None = None,
                 max_chunk_s: float | None = None):
        path = Path(os.path.expanduser(str(path)))
        if not (path / "config.json").is_file():
            raise WeightsError(f"wav2vec2 folder {path} has no config.json; download facebook/wav2vec2-base-960h "
                               "there (or set audio_encoder.path to your local copy)")
        self.path = path
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if normalize is None:
            pp = path / "preprocessor_config.json"
            normalize = bool(json.loads(pp.read_text()).get("do_normalize", True)) if pp.is_file() else True
        self.normalize = normalize
        self.max_chunk_s = max_chunk_s
        self._model = None
        self._dim: int | None = None

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from vexpress.utils.imports import require

            transformers = require("transformers", "the wav2vec2 audio encoder")
            try:
                model = transformers.Wav2Vec2Model.from_pretrained(str(self.path), local_files_only=True)
            except Exception as err:  # noqa: BLE001
                msg = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
                raise WeightsError(f"cannot load wav2vec2 from {self.path}: {msg} (check the folder holds "
                                   "config.json and model weights)") from err
            self._model = model.to(self.device, self.dtype).eval().requires_grad_(False)
            self._dim = int(model.config.hidden_size)
        return self._model

    @property
    def name(self) -> str:
        return f"wav2vec2:{self.path.name}"

    @property
    def dim(self) -> int:
        if self._dim is None:
            cfg = json.loads((self.path / "config.json").read_text())
            self._dim = int(cfg.get("hidden_size", 768))
        return self._dim

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """(S,) 16 kHz waveform -> (N, hidden_size) float32, N ~ S / 320."""
        wav = check_waveform(waveform)
        if self.normalize:
            wav = (wav - wav.mean()) / torch.sqrt(wav.var(unbiased=False) + 1e-7)
        model = self._load()
        if self.max_chunk_s is None or wav.numel() <= self.max_chunk_s * SAMPLE_RATE:
            out = model(wav[None].to(self.device, self.dtype)).last_hidden_state[0]
            return out.float().cpu()
        return self._encode_chunked(model, wav)

    def _encode_chunked(self, model, wav: torch.Tensor) -> torch.Tensor:
        hop = 320
        chunk = int(self.max_chunk_s * SAMPLE_RATE) // hop * hop
        ctx = 2 * SAMPLE_RATE // hop * hop  # 2 s of context on each side, dropped afterwards
        total = max(1, (wav.numel() - 400) // hop + 1)
        rows: list[torch.Tensor] = []
        start = 0
        while start < wav.numel():
            a, b = max(0, start - ctx), min(wav.numel(), start + chunk + ctx)
            out = model(wav[a:b][None].to(self.device, self.dtype)).last_hidden_state[0].float().cpu()
            skip = (start - a) // hop
            rows.append(out[skip: skip + chunk // hop])
            start += chunk
        return torch.cat(rows)[:total]

    def __repr__(self) -> str:
        return f"Wav2Vec2Encoder(path={str(self.path)!r})"


class PhoneticEncoder:
    """The synthetic world's wav2vec2 (:mod:`vexpress.audio.phonetic`) from a folder written by
    :func:`~vexpress.audio.phonetic.save_phonetic_encoder`: log-mel rows through the trained convolutions."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu"):
        from vexpress.audio.phonetic import WEIGHTS, PhoneticNet, load_phonetic_weights, read_phonetic_config

        self.path = Path(path)
        cfg = read_phonetic_config(self.path)
        self.config = cfg
        self.front = LogMelEncoder(**cfg["front_end"])
        self.net = PhoneticNet(**cfg["network"])
        load_phonetic_weights(self.net, self.path / WEIGHTS)
        self.net.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)

    @property
    def name(self) -> str:
        return f"phonetic{self.dim}@{self.rate_hz:g}Hz"

    @property
    def dim(self) -> int:
        return int(self.net.shape["dim"])

    @property
    def rate_hz(self) -> float:
        return self.front.rate_hz

    def num_frames(self, num_samples: int) -> int:
        return self.front.num_frames(num_samples)

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """(S,) 16 kHz waveform -> (1 + S // hop, dim) float32, the whole utterance in one pass."""
        mel = self.front.encode(waveform).to(self.device)
        return self.net(mel[None])[0].float().cpu().contiguous()

    def __repr__(self) -> str:
        return f"PhoneticEncoder({self.path})"


def build_audio_encoder(cfg: Mapping[str, Any] | str | None = None) -> AudioEncoder:
    """Encoder from a config: ``{"name": "logmel", n_mels: 80, ...}``, ``{"name": "wav2vec2", "path": DIR}`` or
    ``{"name": "whisper", "path": DIR, "layers": -1}`` (:class:`vexpress.audio.whisper.WhisperEncoder`).

    A bare string is the name; ``None`` gives the default log-mel encoder. A ``_target_`` key (Hydra) is ignored.
    """
    if cfg is None:
        return LogMelEncoder()
    if isinstance(cfg, str):
        cfg = {"name": cfg}
    cfg = {k: v for k, v in dict(cfg).items() if not str(k).startswith("_")}
    name = str(cfg.pop("name", "logmel")).lower()
    if name in ("logmel", "mel", "log_mel"):
        return _construct(LogMelEncoder, name, cfg)
    if name in ("wav2vec2", "wav2vec"):
        if not cfg.get("path"):
            raise WeightsError("the wav2vec2 audio encoder needs a local path: set audio_encoder.path=/path/to/"
                               "wav2vec2-base-960h")
        return _construct(Wav2Vec2Encoder, name, cfg)
    if name.startswith("phonetic"):
        if not cfg.get("path"):
            raise WeightsError("the phonetic audio encoder needs its folder: set audio_encoder.path=experiments/"
                               "foundation/weights/audio_encoder (written by vexpress-foundation)")
        return _construct(PhoneticEncoder, name, cfg)
    if name == "whisper":
        if not cfg.get("path"):
            raise WeightsError("the whisper audio encoder needs a local path: set audio_encoder.path=/path/to/"
                               "whisper-small (a folder saved with save_pretrained)")
        return _construct(WhisperEncoder, name, cfg)
    raise InputError(f"unknown audio encoder {name!r}; use 'logmel' (weight-free), 'wav2vec2', 'whisper' or "
                     "'phonetic' (local path)")


def _construct(cls: type, name: str, cfg: dict) -> AudioEncoder:
    import inspect

    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise InputError(f"audio_encoder options {unknown} do not apply to the {name} encoder; it takes "
                         f"{sorted(known)} (check audio_encoder.name)")
    return cls(**cfg)


def is_official_encoder(encoder: Any) -> bool:
    """True when ``encoder`` (an encoder object, its config, its name, or a folder path, which the official route
    reads as wav2vec2) is the kind the official V-Express release was trained with: wav2vec2."""
    if encoder is None:
        return True
    if isinstance(encoder, os.PathLike) or (isinstance(encoder, str) and (os.sep in encoder or "/" in encoder)):
        return True  # a folder: the official route loads it as wav2vec2 (and says so if it is not one)
    if isinstance(encoder, str):
        return Path(os.path.expanduser(encoder)).is_dir() or encoder.lower().startswith("wav2vec")
    if isinstance(encoder, Mapping):
        return str(encoder.get("name") or "logmel").lower().startswith("wav2vec")
    return isinstance(encoder, Wav2Vec2Encoder) or str(getattr(encoder, "name", "")).startswith("wav2vec2")


def check_official_encoder(encoder: Any) -> None:
    """Refuse pairing the official V-Express weights with another audio encoder (their audio projection was trained
    on wav2vec2-base-960h features; another encoder of the same width would load but drive the lips with noise).

    ``encoder``: an encoder object, its config, its name, or a folder path (read as wav2vec2, as the official route
    does).
    """
    if not is_official_encoder(encoder):
        name = (encoder.get("name") or "logmel") if isinstance(encoder, Mapping) else getattr(encoder, "name", encoder)
        raise WeightsError(f"the official V-Express weights only work with the wav2vec2 audio encoder "
                           f"(wav2vec2-base-960h), not {name}; set audio_encoder.name=wav2vec2, or train a model on "
                           "the other encoder's features")


def check_encoder_width(encoder: Any, embedding_dim: int, what: str = "the model") -> None:
    """Raise a one-line :class:`ShapeError` when ``encoder.dim`` differs from the AudioProjection ``embedding_dim``."""
    dim = getattr(encoder, "dim", None)
    if dim is not None and int(dim) != int(embedding_dim):
        name = getattr(encoder, "name", type(encoder).__name__)
        raise ShapeError(f"the audio encoder {name} gives {int(dim)}-d features but {what} expects "
                         f"audio_projection.embedding_dim={int(embedding_dim)}; use the encoder the model was trained "
                         f"with, or set the model's audio dim to {int(dim)} (data.audio_dim={int(dim)} in training)")


def expected_rows(encoder: AudioEncoder, duration_s: float) -> int:
    """Rough number of feature rows an encoder produces for ``duration_s`` seconds of audio."""
    return max(1, int(math.floor(duration_s * float(encoder.rate_hz))))
