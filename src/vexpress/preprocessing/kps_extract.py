"""Driving keypoints from a video: the V-Kps sequence in 512x512 coordinates (official
``scripts/extract_kps_sequence_and_audio.py``, with mediapipe instead of insightface).

Every frame is resized to 512x512 (aspect ratio not kept, as the official script does), the face is analysed with
:class:`~vexpress.preprocessing.face.FaceAnalyzer` in video mode, and the largest face's three points are kept.
Frames where no face is found get points interpolated from their neighbours (the official script stops with an
assertion); a video with too few face frames is refused with a :class:`~vexpress.errors.NoFaceError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vexpress.audio import load_audio, save_wav
from vexpress.data.video import iter_frames, probe_video
from vexpress.errors import InputError, NoFaceError
from vexpress.kps.io import KPS_FRAME_SIZE, save_kps
from vexpress.preprocessing.clips import interpolate_invalid
from vexpress.preprocessing.face import FaceAnalyzer
from vexpress.utils.io import atomic_paths


def extract_kps(video: str | os.PathLike, size: int = KPS_FRAME_SIZE, mode: str = "video",
                min_face_fraction: float = 0.5, analyzer=None, return_valid: bool = False,
                smooth_sigma: float = 0.0):
    """(T, 3, 2) float32 tensor of [left eye, right eye, nose] in ``size`` x ``size`` pixel coordinates.

    With ``return_valid`` also returns the (T,) bool tensor of frames where a face was found. ``smooth_sigma`` > 0
    smooths the points in time with :func:`smooth_kps` (zero-phase, no lag); off by default because against the
    official insightface points it gains nothing (see ``docs/data.md``).
    """
    own = analyzer is None
    fa = analyzer or FaceAnalyzer(mode=mode, max_faces=2)
    kps, valid = [], []
    try:
        fa.reset()
        for frame in iter_frames(video, size=(size, size)):
            faces = fa(frame)
            if faces:
                kps.append(faces[0].kps)
                valid.append(True)
            else:
                kps.append(np.full((3, 2), np.nan, np.float32))
                valid.append(False)
    finally:
        if own:
            fa.close()
    if not kps:
        raise NoFaceError(f"{video} has no decodable frames; give a video of a face")
    v = np.asarray(valid)
    if v.mean() < min_face_fraction:
        raise NoFaceError(f"no face found in {100 * (1 - v.mean()):.0f}% of the frames of {video}; give a driving "
                          "video that shows one face")
    arr = interpolate_invalid(np.stack(kps).astype(np.float32), v)
    if smooth_sigma > 0:
        arr = smooth_kps(arr, smooth_sigma)
    out = torch.from_numpy(arr)
    return (out, torch.from_numpy(v)) if return_valid else out


def smooth_kps(kps: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing of a (T, ...) point sequence along time (``sigma`` in frames).

    Every output frame is a symmetric weighted mean of its neighbours (the ends are extended by reflection), so a
    steady motion comes out without delay, unlike causal filters (exponential, One-Euro) that trail the motion.
    """
    x = np.asarray(kps, dtype=np.float64)
    if sigma <= 0 or len(x) < 2:
        return x.astype(np.float32)
    r = max(1, int(round(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.concatenate([x[1:r + 1][::-1], x, x[-r - 1:-1][::-1]]) if len(x) > r else np.pad(
        x, [(r, r)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    flat = pad.reshape(len(pad), -1)
    out = np.stack([np.convolve(flat[:, i], k, mode="valid") for i in range(flat.shape[1])], -1)
    return out.reshape(x.shape).astype(np.float32)


def extract_kps_and_audio(video: str | os.PathLike, output: str | os.PathLike,
                          audio_output: str | os.PathLike | None = None, **kwargs) -> tuple[Path, Path | None]:
    """Write the keypoint tensor to ``output`` and the audio track (16 kHz mono WAV) next to it.

    ``audio_output`` defaults to ``output`` with the suffix ``.wav``. A video without an audio track gets no audio
    file (returned as None) rather than an error: driving keypoints alone are useful too. The names are checked
    before any work; both files are computed first and then appear together (nothing is written on any error).
    """
    output = Path(output)
    audio_path = Path(audio_output) if audio_output else output.with_suffix(".wav")
    check_output_names(output, audio_path)
    info = probe_video(video)  # a clear error for non-videos before any work
    kps = extract_kps(video, **kwargs)
    wav = load_audio(video) if info.has_audio else None
    with atomic_paths(output, *([audio_path] if wav is not None else [])) as tmps:
        save_kps(tmps[0], kps)
        if wav is not None:
            save_wav(tmps[1], wav)
    return output, (audio_path if wav is not None else None)


KPS_OUTPUT_SUFFIXES = (".pth", ".pt")


def check_output_names(output: str | os.PathLike, audio_output: str | os.PathLike) -> None:
    """Refuse output names that would lose a file: the keypoints need a torch suffix, the audio ``.wav``, and the
    two must differ (raises :class:`~vexpress.errors.InputError`)."""
    output, audio_output = Path(output), Path(audio_output)
    if output.suffix.lower() not in KPS_OUTPUT_SUFFIXES:
        raise InputError(f"output={output} must name the keypoint file with a {' or '.join(KPS_OUTPUT_SUFFIXES)} "
                         f"suffix (e.g. {output.with_suffix('.pth').name}); the audio goes next to it as .wav")
    if audio_output.suffix.lower() != ".wav":
        raise InputError(f"audio_output={audio_output} must end with .wav (a 16 kHz mono WAV file is written)")
    if output.expanduser().absolute() == audio_output.expanduser().absolute():
        raise InputError(f"output and audio_output are the same file {output}; give two different names")
