"""MFCC parity with the python_speech_features definition, against a reference written out independently."""

import math

import numpy as np
import pytest

from vexpress.metrics.mfcc import frame_signal, mfcc, to_int16_scale


def _reference_mfcc(sig: np.ndarray, sr: int = 16000) -> np.ndarray:
    """python_speech_features.mfcc(sig, sr) defaults, step by step with explicit loops and matrices."""
    nfft, nfilt, numcep, lifter_l = 512, 26, 13, 22
    frame_len, step = 400, 160  # round_half_up(0.025 * 16000), round_half_up(0.01 * 16000)
    # 1. pre-emphasis
    y = np.empty(len(sig))
    y[0] = sig[0]
    for n in range(1, len(sig)):
        y[n] = sig[n] - 0.97 * sig[n - 1]
    # 2. framing with zero padding at the end, rectangular window
    numframes = 1 if len(y) <= frame_len else 1 + math.ceil((len(y) - frame_len) / step)
    frames = np.zeros((numframes, frame_len))
    for i in range(numframes):
        chunk = y[i * step: i * step + frame_len]
        frames[i, : len(chunk)] = chunk
    # 3. power spectrum through an explicit DFT matrix (first 400 samples, zero-padded to 512)
    k = np.arange(nfft // 2 + 1)[:, None]
    n = np.arange(frame_len)[None, :]
    dft = np.exp(-2j * np.pi * k * n / nfft)
    spec = frames @ dft.T
    power = (spec.real ** 2 + spec.imag ** 2) / nfft
    energy = power.sum(1)
    energy[energy == 0] = np.finfo(float).eps

    # 4. mel filterbank, filter by filter
    def mel(f):
        return 2595 * np.log10(1 + f / 700.0)

    def inv_mel(m):
        return 700 * (10 ** (m / 2595.0) - 1)

    points = np.linspace(mel(0), mel(sr / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * inv_mel(points) / sr)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    feat = power @ fb.T
    feat[feat == 0] = np.finfo(float).eps
    logfeat = np.log(feat)
    # 5. orthonormal DCT-II as an explicit cosine matrix
    m = np.arange(nfilt)
    dct = np.zeros((numcep, nfilt))
    for q in range(numcep):
        scale = np.sqrt(1.0 / nfilt) if q == 0 else np.sqrt(2.0 / nfilt)
        dct[q] = scale * np.cos(np.pi * q * (2 * m + 1) / (2 * nfilt))
    ceps = logfeat @ dct.T
    # 6. lifter and log energy in c0
    for q in range(numcep):
        ceps[:, q] *= 1 + (lifter_l / 2.0) * np.sin(np.pi * q / lifter_l)
    ceps[:, 0] = np.log(energy)
    return ceps


@pytest.mark.parametrize("length", [123, 400, 401, 560, 16000 + 77])
def test_mfcc_matches_python_speech_features_definition(length):
    rng = np.random.default_rng(length)
    t = np.arange(length) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.normal(size=length)
    sig = to_int16_scale(wave)
    got = mfcc(sig, 16000)
    ref = _reference_mfcc(sig)
    assert got.shape == ref.shape == (1 if length <= 400 else 1 + math.ceil((length - 400) / 160), 13)
    err = np.abs(got - ref).max()
    assert err <= 1e-9 * max(1.0, np.abs(ref).max()), err


def test_silence_uses_eps_not_nan():
    out = mfcc(np.zeros(1000))
    assert np.isfinite(out).all()


def test_frame_signal_counts_and_padding():
    frames = frame_signal(np.arange(1, 501, dtype=float), 400, 160)
    assert frames.shape == (2, 400)
    assert frames[1, 0] == 161 and frames[1, 339] == 500 and frames[1, 340] == 0.0


def test_int16_scaling_like_ffmpeg():
    np.testing.assert_array_equal(to_int16_scale(np.array([-1.0, 0.5, 1.0, 2.0])), [-32768, 16384, 32767, 32767])
