"""Whisper encoder features: a multilingual alternative to wav2vec2-base-960h (which is English-only).

:class:`WhisperEncoder` runs the encoder half of a transformers ``WhisperModel`` (any size: tiny d_model=384, base
512, small 768, medium 1024, large 1280) from a local folder and returns per-utterance features ``(N, D)`` at
exactly 50 rows per second, which :func:`vexpress.audio.windows.audio_windows` then resamples to two rows per video
frame, as for wav2vec2.

How the rows are made (all numbers for the standard Whisper front end: 16 kHz, 160-sample mel hop, 30 s windows):

- Whisper only accepts fixed windows of ``chunk_length`` seconds (30 s = 3000 log-mel frames), which its stride-2
  convolution turns into 1500 positions: one every 320 samples (20 ms). Position ``j`` of a window is centred on
  sample ``320 j`` of that window.
- The waveform is fed from sample 160 on (half a row later), so row ``j`` is centred on ``(j + 0.5) * 20 ms`` of the
  utterance: the same convention as the linear resampling of ``audio_windows`` (``align_corners=False``), which
  treats row ``j`` of ``N`` as the ``j``-th of ``N`` equal slices of the utterance. Row and video frame timing then
  agree to well under a millisecond instead of being 10 ms apart.
- ``N = max(1, ceil((S - 160) / 320))`` for ``S`` samples (the rows whose centre lies inside the audio), so
  ``N * 20 ms`` is the duration to within 10 ms.
- Shorter audio is zero-padded to one window (Whisper's own padding, done by its feature extractor) and the rows
  past the real length are cropped away.
- Longer audio is cut into windows that overlap by ``context_s`` seconds on each side: each window keeps only its
  middle ``chunk_length - 2 * context_s`` seconds (26 s by default), so every kept row saw at least ``context_s``
  of real neighbouring audio (except at the ends of the utterance). Window starts are multiples of 320 samples, so
  the rows of consecutive windows join on the same 20 ms grid.
- ``layers`` picks the hidden states: ``0`` is the convolutional front end plus positional embeddings, ``k`` the
  output of transformer block ``k``, and the last index (``-1``, the default) is ``last_hidden_state`` (block output
  followed by the encoder's final LayerNorm), i.e. the numbering of transformers' ``hidden_states``. Several layers
  are concatenated along the feature axis in the order given (``D = d_model * len(layers)``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from vexpress.audio.io import SAMPLE_RATE, check_waveform, resample
from vexpress.errors import InputError, WeightsError

_LOADED: dict[str, Any] = {}  # the last loaded (encoder, feature extractor), reused by encoders of the same folder


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


class WhisperEncoder:
    """Hidden states of a Whisper encoder from a local folder, at 50 rows per second; never downloads.

    Args:
        path: folder saved with ``save_pretrained`` holding a ``WhisperModel`` or ``WhisperForConditionalGeneration``
            (``config.json`` + weights) and, ideally, the ``WhisperFeatureExtractor`` (``preprocessor_config.json``;
            when absent the standard 16 kHz front end with the model's ``num_mel_bins`` is used).
        layers: hidden-state index or list of indices (see the module doc); ``-1`` = ``last_hidden_state``.
        device: where to run the encoder.
        dtype: encoder dtype (``float32``; ``float16``/``bfloat16`` on CUDA to save memory).
        context_s: seconds of overlap kept on each side of a window when audio is longer than one window.
        batch_size: windows encoded together for long audio.
    """

    rate_hz = 50.0

    def __init__(self, path: str | os.PathLike, layers: int | Sequence[int] | str | None = -1,
                 device: str | torch.device = "cpu", dtype: torch.dtype | str = torch.float32,
                 context_s: float = 2.0, batch_size: int = 4):
        path = Path(os.path.expanduser(str(path)))
        if not (path / "config.json").is_file():
            raise WeightsError(f"Whisper folder {path} has no config.json; save a Whisper checkpoint there (e.g. "
                               "openai/whisper-small with save_pretrained) and set audio_encoder.path to it")
        try:
            cfg = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as err:
            raise WeightsError(f"cannot read {path / 'config.json'}: {_first_line(err)}") from err
        if cfg.get("model_type") != "whisper":
            raise WeightsError(f"{path} holds a {cfg.get('model_type')!r} model, not Whisper; give a Whisper "
                               "checkpoint folder (or use audio_encoder.name=wav2vec2 for wav2vec2)")
        self.path = path
        self.d_model = int(cfg.get("d_model", 384))
        self.num_layers = int(cfg.get("encoder_layers", 4))
        self.num_mel_bins = int(cfg.get("num_mel_bins", 80))
        self.max_source_positions = int(cfg.get("max_source_positions", 1500))
        self.layers = self._parse_layers(layers)
        self.device = torch.device(device)
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if context_s < 0:
            raise InputError(f"audio_encoder.context_s must be >= 0, got {context_s}")
        self.context_s = float(context_s)
        self.batch_size = max(1, int(batch_size))
        self._encoder = None
        self._extractor = None

    # ---------------------------------------------------------------------------------------------------------------
    def _parse_layers(self, layers: Any) -> tuple[int, ...]:
        if layers is None or (isinstance(layers, str) and layers.strip().lower() in ("", "last")):
            layers = [-1]
        elif isinstance(layers, str):
            try:
                layers = [int(x) for x in layers.replace("+", ",").split(",") if x.strip()]
            except ValueError:
                raise InputError(f"audio_encoder.layers={layers!r} is not a layer index or list of indices; use "
                                 f"e.g. -1 or [2,4] (0..{self.num_layers})") from None
        elif isinstance(layers, int):
            layers = [layers]
        out = []
        for layer in list(layers):
            k = int(layer)
            k = k + self.num_layers + 1 if k < 0 else k
            if not 0 <= k <= self.num_layers:
                raise InputError(f"audio_encoder.layers has {int(layer)} but {self.path.name} has hidden states "
                                 f"0..{self.num_layers} (or -1..-{self.num_layers + 1}); pick indices in that range")
            out.append(k)
        if not out:
            raise InputError("audio_encoder.layers is empty; give at least one hidden-state index (e.g. -1)")
        return tuple(out)

    @property
    def name(self) -> str:
        base = f"whisper:{self.path.name}"
        if self.layers == (self.num_layers,):
            return base
        return base + "@" + "+".join(f"L{k}" for k in self.layers)

    @property
    def dim(self) -> int:
        return self.d_model * len(self.layers)

    # ---------------------------------------------------------------------------------------------------------------
    def _cache_key(self) -> tuple:
        stamp = tuple((f.name, f.stat().st_mtime_ns) for f in sorted(self.path.iterdir()) if f.is_file())
        return (str(self.path.resolve()), stamp, str(self.device), str(self.dtype))

    def _load(self):
        if self._encoder is None:
            key = self._cache_key()
            if _LOADED.get("key") == key:  # the same checkpoint was loaded in this process (e.g. one clip per job)
                self._encoder, self._extractor = _LOADED["value"]
                return self._encoder
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from vexpress.utils.imports import require

            transformers = require("transformers", "the Whisper audio encoder")
            try:
                model = transformers.WhisperModel.from_pretrained(str(self.path), local_files_only=True)
            except Exception as err:  # noqa: BLE001
                raise WeightsError(f"cannot load Whisper from {self.path}: {_first_line(err)} (check the folder "
                                   "holds config.json and model weights)") from err
            encoder = model.get_encoder()
            del model  # the decoder is not needed
            if (self.path / "preprocessor_config.json").is_file():
                try:
                    extractor = transformers.WhisperFeatureExtractor.from_pretrained(str(self.path),
                                                                                     local_files_only=True)
                except Exception as err:  # noqa: BLE001
                    raise WeightsError(f"cannot read the Whisper feature extractor in {self.path}: "
                                       f"{_first_line(err)}") from err
            else:
                extractor = transformers.WhisperFeatureExtractor(feature_size=self.num_mel_bins)
            if int(extractor.sampling_rate) != SAMPLE_RATE:
                raise WeightsError(f"the Whisper feature extractor in {self.path} expects "
                                   f"{extractor.sampling_rate} Hz audio; vexpress feeds 16 kHz")
            if int(extractor.feature_size) != self.num_mel_bins:
                raise WeightsError(f"{self.path}: the feature extractor makes {extractor.feature_size} mel bins but "
                                   f"the model expects {self.num_mel_bins}; save the matching WhisperFeatureExtractor")
            strides = int(encoder.conv1.stride[0]) * int(encoder.conv2.stride[0])
            if int(extractor.nb_max_frames) != self.max_source_positions * strides:
                raise WeightsError(f"{self.path}: the feature extractor makes {extractor.nb_max_frames} mel frames per "
                                   f"window but the encoder takes {self.max_source_positions * strides}")
            self._extractor = extractor
            self._encoder = encoder.to(self.device, self.dtype).eval().requires_grad_(False)
            _LOADED.clear()  # keep one checkpoint at most
            _LOADED.update(key=key, value=(self._encoder, self._extractor))
        return self._encoder

    @property
    def window_samples(self) -> int:
        """Samples per encoder window (480000 = 30 s for every released Whisper)."""
        self._load()
        return int(self._extractor.n_samples)

    @property
    def hop(self) -> int:
        """Samples per output row (320 = 20 ms)."""
        self._load()
        return int(self._extractor.n_samples) // self.max_source_positions

    def num_rows(self, num_samples: int) -> int:
        """Rows :meth:`encode` returns for ``num_samples`` samples at 16 kHz."""
        hop = 320 if self._encoder is None else self.hop
        return max(1, math.ceil((int(num_samples) - hop // 2) / hop))

    # ---------------------------------------------------------------------------------------------------------------
    def _encode_windows(self, windows: list[torch.Tensor]) -> torch.Tensor:
        """(B windows of <= window_samples) -> (B, max_source_positions, dim) float32 on the CPU."""
        encoder = self._load()
        feats = self._extractor([w.numpy() for w in windows], sampling_rate=SAMPLE_RATE, return_tensors="pt",
                                padding="max_length", truncation=True)
        mels = feats["input_features"].to(self.device, self.dtype)
        captured: dict[int, torch.Tensor] = {}
        hooks = []
        want = set(self.layers)
        if 0 in want and self.num_layers > 0:
            hooks.append(encoder.layers[0].register_forward_pre_hook(
                lambda _m, args, kwargs: captured.__setitem__(0, _hidden(args, kwargs)), with_kwargs=True))
        for k in want - {0, self.num_layers}:
            hooks.append(encoder.layers[k - 1].register_forward_hook(
                lambda _m, _a, out, k=k: captured.__setitem__(k, out[0] if isinstance(out, tuple) else out)))
        try:
            last = encoder(mels).last_hidden_state
        finally:
            for h in hooks:
                h.remove()
        captured[self.num_layers] = last  # the final index is last_hidden_state (after the final LayerNorm)
        return torch.cat([captured[k] for k in self.layers], dim=-1).float().cpu()

    @torch.no_grad()
    def encode(self, waveform: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
        """(S,) mono waveform (16 kHz unless ``sample_rate`` says otherwise) -> (N, dim) float32 at 50 rows/s."""
        if int(sample_rate) != SAMPLE_RATE:
            waveform = resample(torch.as_tensor(waveform).float(), int(sample_rate), SAMPLE_RATE)
        wav = check_waveform(waveform).cpu()
        self._load()
        hop, window = self.hop, self.window_samples
        total = self.num_rows(wav.numel())
        shifted = wav[hop // 2:]  # row j is then centred on (j + 0.5) * hop of the utterance
        if shifted.numel() <= window:
            return self._encode_windows([shifted])[0, :total].contiguous()
        rows_per_window = window // hop
        ctx_rows = int(round(self.context_s * SAMPLE_RATE / hop))
        keep_rows = rows_per_window - 2 * ctx_rows
        if keep_rows < 1:
            raise InputError(f"audio_encoder.context_s={self.context_s} leaves nothing of a "
                             f"{window / SAMPLE_RATE:g} s window; use a context below {window / SAMPLE_RATE / 2:g} s")
        plan = []  # (window start sample, first kept row inside the window)
        for first in range(0, total, keep_rows):
            start_row = max(0, first - ctx_rows)
            plan.append((start_row * hop, first - start_row))
        out: list[torch.Tensor] = []
        for i in range(0, len(plan), self.batch_size):
            part = plan[i:i + self.batch_size]
            feats = self._encode_windows([shifted[a:a + window] for a, _ in part])
            out.extend(f[skip:skip + keep_rows] for f, (_, skip) in zip(feats, part))
        return torch.cat(out)[:total].contiguous()

    def __repr__(self) -> str:
        return f"WhisperEncoder(path={str(self.path)!r}, layers={list(self.layers)})"


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]
