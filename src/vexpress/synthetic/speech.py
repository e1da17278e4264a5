"""Speech-like audio at 16 kHz and the mouth shape it implies, frame by frame.

An utterance is a sequence of syllables separated by pauses. Each syllable is a vowel (one of :data:`VOWELS`,
with its own formant frequencies) voiced by a glottal pulse train at the speaker's pitch, shaped by an envelope
(attack, sustain, release) and a loudness; half of them start with a consonant noise burst. Between phrases there
are pauses of silence (plus a faint noise floor).

The mouth of frame ``i`` is a deterministic function of the audio over that frame's time span
``[i / fps, (i + 1) / fps)``: its *voicing level* ``e`` (the mean vowel envelope times loudness, in [0, 1]) and the
*vowel* sounding then (the syllable with the largest envelope)::

    opening = e * OPEN[vowel]
    width   = NEUTRAL_WIDTH + e * (WIDTH[vowel] - NEUTRAL_WIDTH)

so the mouth is closed in pauses and during consonant bursts, and it cannot be predicted from the face or the
head pose (which move independently of the audio).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000

#: Vowel classes: formants F1, F2, F3 (Hz, adult male reference) and the mouth they produce at full voicing.
VOWELS: dict[str, dict] = {
    "a": {"formants": (780.0, 1250.0, 2600.0), "open": 1.00, "width": 0.75},
    "i": {"formants": (290.0, 2250.0, 3000.0), "open": 0.25, "width": 1.00},
    "u": {"formants": (320.0, 800.0, 2300.0), "open": 0.45, "width": 0.05},
    "e": {"formants": (500.0, 1850.0, 2600.0), "open": 0.60, "width": 0.90},
    "o": {"formants": (520.0, 900.0, 2450.0), "open": 0.80, "width": 0.30},
}
VOWEL_NAMES: tuple[str, ...] = tuple(VOWELS)
NEUTRAL_WIDTH = 0.5
BANDWIDTHS = (90.0, 110.0, 150.0)


@dataclass
class Syllable:
    start: float  # vowel onset (s)
    duration: float  # vowel duration (s)
    vowel: int  # index into VOWEL_NAMES
    loudness: float  # 0..1
    consonant: int  # 0 none, 1 fricative (hiss), 2 plosive (burst)


def plan_syllables(rng: np.random.Generator, duration: float, pause_prob: float = 0.12) -> list[Syllable]:
    """Random syllable timing: 0.13-0.32 s vowels, short gaps, phrases separated by 0.2-0.5 s pauses."""
    out: list[Syllable] = []
    t = rng.uniform(0.05, 0.25)
    phrase_gain = rng.uniform(0.6, 1.0)
    while True:
        cons = int(rng.choice(3, p=[0.5, 0.25, 0.25]))
        onset = t + (rng.uniform(0.04, 0.07) if cons else 0.0)
        dur = rng.uniform(0.13, 0.32)
        if onset + dur > duration - 0.05:
            break
        loud = float(np.clip(phrase_gain * rng.uniform(0.55, 1.0), 0.25, 1.0))
        out.append(Syllable(start=onset, duration=dur, vowel=int(rng.integers(len(VOWELS))), loudness=loud,
                            consonant=cons))
        t = onset + dur + rng.uniform(0.01, 0.05)
        if rng.random() < pause_prob:
            t += rng.uniform(0.2, 0.5)
            phrase_gain = rng.uniform(0.6, 1.0)
    return out


def envelope(n: int, rate: int, attack: float = 0.03, release: float = 0.045) -> np.ndarray:
    """Raised-cosine attack/release envelope of ``n`` samples, peak 1."""
    env = np.ones(n)
    na, nr = min(n // 2, int(attack * rate)), min(n // 2, int(release * rate))
    if na:
        env[:na] = 0.5 - 0.5 * np.cos(np.pi * np.arange(na) / na)
    if nr:
        env[n - nr:] = 0.5 + 0.5 * np.cos(np.pi * np.arange(nr) / nr)
    return env


def _resonator(x: np.ndarray, freq: float, bw: float, rate: int) -> np.ndarray:
    from scipy.signal import lfilter

    r = np.exp(-np.pi * bw / rate)
    theta = 2 * np.pi * freq / rate
    a = [1.0, -2 * r * np.cos(theta), r * r]
    b = [1.0 - r]  # unit-ish gain near the peak
    return lfilter(b, a, x)


def synthesize(syllables: list[Syllable], duration: float, f0: float, formant_scale: float,
               rng: np.random.Generator, rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the utterance.

    Returns ``(waveform (S,) float32 in [-1, 1], voicing (S,) in [0, 1], vowel_weight (V, S))``: the vowel
    envelopes times loudness (summed over syllables) and per vowel class, sample by sample.
    """
    from scipy.signal import butter, lfilter

    n = int(round(duration * rate))
    t = np.arange(n) / rate
    # glottal source: pitch with slow intonation and a little vibrato, sawtooth pulses, spectral tilt
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t + rng.uniform(0, 6.3))
                  + 0.015 * np.sin(2 * np.pi * 5.5 * t))
    phase = np.cumsum(pitch / rate)
    source = 2 * (phase - np.floor(phase)) - 1.0
    b, a = butter(1, 900 / (rate / 2))
    source = lfilter(b, a, source) + 0.05 * rng.standard_normal(n) * 0.3

    wave = np.zeros(n)
    voicing = np.zeros(n)
    vowel_weight = np.zeros((len(VOWELS), n))
    hb, ha = butter(2, [3500 / (rate / 2), 7200 / (rate / 2)], btype="band")
    for syl in syllables:
        i0 = int(syl.start * rate)
        i1 = min(n, int((syl.start + syl.duration) * rate))
        if i1 <= i0:
            continue
        pad = int(0.02 * rate)
        j0 = max(0, i0 - pad)
        seg = source[j0:i1]
        formants = VOWELS[VOWEL_NAMES[syl.vowel]]["formants"]
        voiced = np.zeros_like(seg)
        for k, (fr, bw) in enumerate(zip(formants, BANDWIDTHS)):
            voiced += _resonator(seg, fr * formant_scale, bw, rate) * (1.0, 0.6, 0.3)[k]
        voiced = voiced[i0 - j0:]
        voiced /= np.abs(voiced).max() + 1e-9
        env = envelope(i1 - i0, rate) * syl.loudness
        wave[i0:i1] += voiced * env
        voicing[i0:i1] += env
        vowel_weight[syl.vowel, i0:i1] += env
        if syl.consonant:
            cl = int((0.05 if syl.consonant == 1 else 0.02) * rate)
            c0 = max(0, i0 - cl - int(0.01 * rate))
            noise = rng.standard_normal(cl + int(0.01 * rate))
            noise = lfilter(hb, ha, noise) if syl.consonant == 1 else noise
            noise = noise[: max(0, min(n, c0 + noise.size) - c0)]
            cenv = envelope(noise.size, rate, 0.005, 0.01) * (0.35 if syl.consonant == 1 else 0.5) * syl.loudness
            wave[c0:c0 + noise.size] += noise / (np.abs(noise).max() + 1e-9) * cenv
    wave += 0.002 * rng.standard_normal(n)  # noise floor
    wave *= 0.6 / max(1e-6, np.abs(wave).max())
    return wave.astype(np.float32), np.clip(voicing, 0.0, 1.0), vowel_weight


def mouth_track(voicing: np.ndarray, vowel_weight: np.ndarray, num_frames: int, fps: float,
                rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mouth (T, 2) [opening, width] and vowel index (T,) (-1 when silent) from the audio's voicing."""
    opens = np.array([VOWELS[v]["open"] for v in VOWEL_NAMES])
    widths = np.array([VOWELS[v]["width"] for v in VOWEL_NAMES])
    out = np.zeros((num_frames, 2), dtype=np.float32)
    vowel = np.full(num_frames, -1, dtype=np.int64)
    for i in range(num_frames):
        a = int(round(i / fps * rate))
        b = max(a + 1, int(round((i + 1) / fps * rate)))
        e = float(voicing[a:b].mean()) if b <= voicing.size else float(voicing[a:].mean() if a < voicing.size else 0)
        w = vowel_weight[:, a:b].sum(1)
        if e < 1e-3 or w.max() <= 0:
            out[i] = (0.0, NEUTRAL_WIDTH)
            continue
        v = int(np.argmax(w))
        vowel[i] = v
        out[i] = (e * opens[v], NEUTRAL_WIDTH + e * (widths[v] - NEUTRAL_WIDTH))
    return out, vowel


def phonetic_targets(voicing: np.ndarray, vowel_weight: np.ndarray, num_rows: int, hop: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """What a speech recogniser knows of the utterance, one row per audio-feature frame.

    Row ``j`` covers the samples ``[j * hop - hop / 2, j * hop + hop / 2)`` (the span a centred STFT frame stands
    for). Returns ``(level (N,) float32, phone (N,) int64)``: the mean voicing level over the row, and its phone
    class, 0 for silence or consonant noise (level below 1e-3) else 1 + the index of the loudest vowel.
    This is speech content (which vowel sounds, how loudly), the synthetic analogue of the phonetic targets an
    ASR-finetuned encoder such as wav2vec2-base-960h was trained on; it is not the mouth.
    """
    n = voicing.size
    level = np.zeros(num_rows, dtype=np.float32)
    phone = np.zeros(num_rows, dtype=np.int64)
    for j in range(num_rows):
        a = max(0, j * hop - hop // 2)
        b = min(n, j * hop + hop - hop // 2)
        if b <= a:
            continue
        e = float(voicing[a:b].mean())
        w = vowel_weight[:, a:b].sum(1)
        level[j] = e
        if e >= 1e-3 and w.max() > 0:
            phone[j] = 1 + int(np.argmax(w))
    return level, phone
