"""Temporal context windows: how a video of any length is denoised by a UNet that sees at most ~32 frames.

The video is covered by windows of ``context_frames`` frames that overlap by (at least) ``context_overlap``
frames. At every denoising step each window gets one guided prediction; a frame's prediction is the mean over the
windows that contain it, and the scheduler then steps every frame once (spec §5.2 step 8.4/8.7).

Differences from the official ``uniform`` schedule (``pipelines/context.py`` with ``step=0, stride=1,
closed_loop=False``), which only ever sees lengths on its window grid because ``inference.py`` truncates the video
to ``(n-1)*(C-O)+C`` frames (dropping up to ``C-O`` frames and rewriting the fps, spec §9.6):

- any length works: when the grid does not end exactly on the last frame, one extra window is placed flush with
  the end (it overlaps its neighbour by more than ``context_overlap``) instead of wrapping frames around;
- a video shorter than one window is one window of its own length (the official code crashes below 0.8 s).

On the official grid both schedules give the same windows, e.g. 20 frames, 8/2 -> [0..7], [6..13], [12..19].
"""

from __future__ import annotations

import torch

from vexpress.errors import InputError


def context_windows(num_frames: int, context_frames: int = 24, context_overlap: int = 4) -> list[range]:
    """Windows (as ``range`` of frame indices, ascending and contiguous) that cover ``num_frames`` frames."""
    if num_frames < 1:
        raise InputError(f"the video needs at least one frame, got {num_frames}; give longer audio")
    if context_frames < 1:
        raise InputError(f"context_frames must be >= 1, got {context_frames}")
    if not 0 <= context_overlap < context_frames:
        raise InputError(
            f"context_overlap must be in [0, context_frames={context_frames}), got {context_overlap}; lower it"
        )
    if num_frames <= context_frames:
        return [range(0, num_frames)]
    stride = context_frames - context_overlap
    starts = list(range(0, num_frames - context_frames + 1, stride))
    if starts[-1] + context_frames < num_frames:
        starts.append(num_frames - context_frames)
    return [range(s, s + context_frames) for s in starts]


def frame_window_counts(windows: list[range], num_frames: int) -> torch.Tensor:
    """(num_frames,) int64: how many windows contain each frame (every frame must be covered)."""
    counts = torch.zeros(num_frames, dtype=torch.int64)
    for window in windows:
        counts[window.start:window.stop] += 1
    if bool((counts == 0).any()):
        missing = int((counts == 0).nonzero()[0])
        raise ValueError(f"context windows leave frame {missing} uncovered")
    return counts


def official_grid_length(duration_s: float, fps: float, context_frames: int = 24, context_overlap: int = 4) -> int:
    """The frame count the official ``inference.py`` would produce (for comparison only; we keep every frame).

    ``int(duration*fps)`` truncated down to the window grid; 0 when the audio is shorter than one window (the
    official code then fails).
    """
    init = int(duration_s * fps)
    stride = context_frames - context_overlap
    n = (init - context_frames) // stride + 1
    return (n - 1) * stride + context_frames if n > 0 else 0
