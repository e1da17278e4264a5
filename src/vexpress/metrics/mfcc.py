"""MFCC features exactly as ``python_speech_features.mfcc`` computes them with its defaults (SyncNet's input).

Defaults (16 kHz): 25 ms frames every 10 ms (400 / 160 samples, rectangular window, end zero-padded), pre-emphasis
0.97, power spectrum ``|rfft(frame, 512)|^2 / 512``, 26 triangular mel filters on FFT bins
``floor((nfft + 1) * hz / sr)``, log, orthonormal DCT-II keeping 13 coefficients, sinusoidal lifter 22, and
coefficient 0 replaced by the log frame energy. SyncNet feeds int16-scaled samples (not [-1, 1]); see
:func:`to_int16_scale`.
"""

from __future__ import annotations

import decimal
import math

import numpy as np

_EPS = np.finfo(float).eps


def _round_half_up(x: float) -> int:
    return int(decimal.Decimal(float(x)).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def to_int16_scale(wave: np.ndarray) -> np.ndarray:
    """Float waveform in [-1, 1] -> float64 values of the int16 PCM samples (what ``wavfile.read`` gives SyncNet).

    Same conversion as ffmpeg's float -> s16: multiply by 32768, round, clip.
    """
    return np.clip(np.rint(np.asarray(wave, dtype=np.float64) * 32768.0), -32768, 32767)


def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(nfilt: int = 26, nfft: int = 512, samplerate: int = 16000, lowfreq: float = 0.0,
                   highfreq: float | None = None) -> np.ndarray:
    """Triangular mel filters ``(nfilt, nfft // 2 + 1)`` on integer FFT bins (python_speech_features layout)."""
    highfreq = samplerate / 2 if highfreq is None else highfreq
    mels = np.linspace(hz_to_mel(lowfreq), hz_to_mel(highfreq), nfilt + 2)
    bins = np.floor((nfft + 1) * mel_to_hz(mels) / samplerate)
    idx = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]
    left, centre, right = bins[:-2, None], bins[1:-1, None], bins[2:, None]
    rise_den = np.where(centre > left, centre - left, 1.0)
    fall_den = np.where(right > centre, right - centre, 1.0)
    rising = np.where((idx >= left) & (idx < centre), (idx - left) / rise_den, 0.0)
    falling = np.where((idx >= centre) & (idx < right), (right - idx) / fall_den, 0.0)
    return rising + falling


def frame_signal(signal: np.ndarray, frame_len: int, frame_step: int) -> np.ndarray:
    """Frames ``(numframes, frame_len)``; at least one frame; the tail is zero-padded to complete the last frame."""
    n = len(signal)
    numframes = 1 if n <= frame_len else 1 + int(math.ceil((n - frame_len) / frame_step))
    padded = np.zeros((numframes - 1) * frame_step + frame_len, dtype=np.float64)
    padded[:n] = signal
    starts = np.arange(numframes)[:, None] * frame_step
    return padded[starts + np.arange(frame_len)[None, :]]


def _dct2_ortho(x: np.ndarray, keep: int) -> np.ndarray:
    from scipy.fft import dct

    return dct(x, type=2, axis=1, norm="ortho")[:, :keep]


def mfcc(
    signal: np.ndarray,
    samplerate: int = 16000,
    winlen: float = 0.025,
    winstep: float = 0.01,
    numcep: int = 13,
    nfilt: int = 26,
    nfft: int = 512,
    lowfreq: float = 0.0,
    highfreq: float | None = None,
    preemph: float = 0.97,
    ceplifter: int = 22,
    append_energy: bool = True,
) -> np.ndarray:
    """MFCC matrix ``(numframes, numcep)`` float64, as ``python_speech_features.mfcc(signal, samplerate)``."""
    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("mfcc of an empty signal")
    x = np.concatenate([x[:1], x[1:] - preemph * x[:-1]])
    frames = frame_signal(x, _round_half_up(winlen * samplerate), _round_half_up(winstep * samplerate))
    if frames.shape[1] > nfft:  # python_speech_features truncates frames longer than the FFT
        frames = frames[:, :nfft]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(axis=1)
    energy[energy == 0] = _EPS
    feats = power @ mel_filterbank(nfilt, nfft, samplerate, lowfreq, highfreq).T
    feats[feats == 0] = _EPS
    ceps = _dct2_ortho(np.log(feats), numcep)
    if ceplifter > 0:
        ceps = ceps * (1.0 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter))
    if append_energy:
        ceps[:, 0] = np.log(energy)
    return ceps
