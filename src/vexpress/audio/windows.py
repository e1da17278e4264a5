"""Audio-to-video alignment of V-Express (spec §1.6), shared by training data and the generation pipeline.

For a video of T frames, the N audio feature vectors of the whole utterance are linearly resampled to exactly 2T
vectors (two per video frame, whatever the fps), padded with ``2p`` zero vectors at both ends, and frame ``i`` takes
the ``2(2p+1)`` rows starting at ``2i``: the audio of frames ``i-p .. i+p``. With ``p = 2`` that is 10 rows per frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vexpress.errors import ShapeError


def tokens_per_frame(num_pad: int = 2) -> int:
    """Rows of audio features per video frame: ``2 * (2 * num_pad + 1)``."""
    return 2 * (2 * num_pad + 1)


def resample_features(features: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Linearly resample (N, D) features to (2*num_frames, D) (``align_corners=False``, computed in float32)."""
    if features.ndim != 2 or features.shape[0] < 1:
        raise ShapeError(f"audio features must be (N >= 1, D), got {tuple(features.shape)}")
    if num_frames < 1:
        raise ShapeError(f"need at least one video frame, got {num_frames}")
    dtype = features.dtype
    x = F.interpolate(features.float().T[None], size=2 * num_frames, mode="linear", align_corners=False)
    return x[0].T.to(dtype)


def frame_windows(resampled: torch.Tensor, num_pad: int = 2) -> torch.Tensor:
    """(2T, D) resampled features -> (T, 2(2p+1), D) per-frame windows (zero padded at both ends)."""
    if resampled.ndim != 2 or resampled.shape[0] % 2:
        raise ShapeError(f"resampled features must be (2T, D), got {tuple(resampled.shape)}")
    pad = resampled.new_zeros(2 * num_pad, resampled.shape[1])
    padded = torch.cat([pad, resampled, pad], dim=0)
    return padded.unfold(0, tokens_per_frame(num_pad), 2).permute(0, 2, 1).contiguous()


def audio_windows(features: torch.Tensor, num_frames: int, num_pad: int = 2) -> torch.Tensor:
    """(N, D) utterance features -> (num_frames, 2(2p+1), D) audio windows, the AudioProjection input."""
    return frame_windows(resample_features(features, num_frames), num_pad)


def silent_frames(wave: torch.Tensor, num_frames: int, fps: float, rate: int = 16000,
                  ratio: float = 0.1) -> torch.Tensor:
    """(num_frames,) bool: frames whose audio is silent, i.e. whose RMS over the frame's span
    ``[i / fps, (i + 1) / fps)`` is at most ``ratio`` times the clip's loud level (the 95th percentile of its frames'
    RMS). Frames past the end of the audio count as silent; a clip with no sound at all is silent throughout."""
    if wave.ndim != 1:
        raise ShapeError(f"audio must be a mono waveform (S,), got {tuple(wave.shape)}")
    if num_frames < 1 or fps <= 0:
        raise ShapeError(f"need num_frames >= 1 and fps > 0, got {num_frames} and {fps}")
    w = wave.float()
    bounds = [int(round(i / fps * rate)) for i in range(num_frames + 1)]
    rms = torch.zeros(num_frames)
    for i in range(num_frames):
        a, b = bounds[i], max(bounds[i] + 1, bounds[i + 1])
        seg = w[a:b]
        if seg.numel():
            rms[i] = seg.pow(2).mean().sqrt()
    loud = float(torch.quantile(rms, 0.95))
    return rms <= ratio * loud
