"""Audio: loading (any format PyAV decodes -> 16 kHz mono float32), encoders, and audio-to-frame alignment.

Public API::

    load_audio(path) -> (S,) float32 tensor at 16 kHz         (vexpress.audio.io)
    save_wav(path, waveform)                                   (vexpress.audio.io)
    LogMelEncoder(), Wav2Vec2Encoder(path), build_audio_encoder(cfg)  (vexpress.audio.encoders)
    WhisperEncoder(path, layers=-1)                            (vexpress.audio.whisper, multilingual)
    audio_windows(features, num_frames)                        (vexpress.audio.windows)
"""

from __future__ import annotations

from vexpress.audio.encoders import AudioEncoder, LogMelEncoder, Wav2Vec2Encoder, build_audio_encoder
from vexpress.audio.io import SAMPLE_RATE, load_audio, save_wav
from vexpress.audio.whisper import WhisperEncoder

__all__ = ["AudioEncoder", "LogMelEncoder", "Wav2Vec2Encoder", "build_audio_encoder", "load_audio", "save_wav",
           "SAMPLE_RATE", "WhisperEncoder"]
