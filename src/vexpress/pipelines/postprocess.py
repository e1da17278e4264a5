"""Anti-flicker post-processing: the official 3x3x3 spatio-temporal median filter, streamed.

The official ``save_video`` (added 2024-05-29, spec §5.2 step 9) replaces every pixel of every channel by the median
of its 3x3x3 (time, row, column) neighbourhood, with reflect padding at the borders of the video. It needs the whole
video in memory. :class:`StreamingMedian3` computes exactly the same result while frames arrive in chunks, holding
only two frames between chunks, so decoding, filtering and encoding form a pipeline whose memory does not depend on
the video length.

Frames are uint8. Filtering after quantisation equals quantising after filtering (the median of 27 values commutes
with any non-decreasing map such as rounding to uint8), so working on uint8 changes nothing but memory.
"""

from __future__ import annotations

from typing import Iterator

import torch


def _reflect_index(i: int, n: int) -> int:
    """Index ``i`` in [-1, n] reflected into [0, n) (numpy/torch 'reflect': -1 -> 1, n -> n-2)."""
    if n == 1:
        return 0
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


def _pad_reflect(x: torch.Tensor) -> torch.Tensor:
    """Reflect-pad the last two axes by one pixel (a 1-pixel axis is replicated); works for any dtype/device."""
    h, w = x.shape[-2:]
    rows = torch.tensor([_reflect_index(i, h) for i in range(-1, h + 1)], device=x.device)
    cols = torch.tensor([_reflect_index(i, w) for i in range(-1, w + 1)], device=x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def median3x3x3(window: torch.Tensor) -> torch.Tensor:
    """Median filter of the middle frames of ``window`` (K+2, H, W, C) -> (K, H, W, C).

    ``window`` holds the K frames to filter plus one neighbour on each side (already reflected at the video ends);
    spatial borders are reflected here.
    """
    k2, h, w, c = window.shape
    x = _pad_reflect(window.permute(0, 3, 1, 2))  # (K+2, C, H+2, W+2)
    patches = x.unfold(2, 3, 1).unfold(3, 3, 1).reshape(k2, c, h, w, 9)
    stacked = torch.cat([patches[:-2], patches[1:-1], patches[2:]], dim=-1)  # (K, C, H, W, 27)
    return stacked.median(dim=-1).values.permute(0, 2, 3, 1).contiguous()


class StreamingMedian3:
    """Feed uint8 frame chunks (F, H, W, C) in order; get filtered chunks back with a delay of one frame.

    ``push`` returns the frames that can already be finished; ``finish`` returns the rest. The output of the whole
    stream equals :func:`median_filter_video` on the concatenated input. ``num_frames`` (the total) must be known so
    that the reflect padding at the end can be applied.
    """

    def __init__(self, num_frames: int, chunk_frames: int = 8):
        self.num_frames = int(num_frames)
        self.chunk_frames = max(1, int(chunk_frames))
        self._buffer: list[torch.Tensor] = []  # frames [first_pending, received)
        self._first_pending = 0  # index of the first frame not yet emitted
        self._received = 0
        self._prev: torch.Tensor | None = None  # frame first_pending - 1 (None before the first emission)

    def push(self, frames: torch.Tensor) -> torch.Tensor | None:
        if frames.ndim != 4:
            raise ValueError(f"frames must be (F, H, W, C), got {tuple(frames.shape)}")
        if self._received + frames.shape[0] > self.num_frames:
            raise ValueError(f"more than the announced {self.num_frames} frames were pushed")
        self._buffer.append(frames)
        self._received += frames.shape[0]
        return self._emit(final=self._received == self.num_frames)

    def finish(self) -> torch.Tensor | None:
        if self._received != self.num_frames:
            raise ValueError(f"expected {self.num_frames} frames, received {self._received}")
        return self._emit(final=True)

    def _emit(self, final: bool) -> torch.Tensor | None:
        if not self._buffer:
            return None
        pending = torch.cat(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        n, start, stop = self.num_frames, self._first_pending, self._received
        last = stop if final else stop - 1  # frames [start, last) have both neighbours available
        if last <= start:
            self._buffer = [pending]
            return None

        def frame(i: int) -> torch.Tensor:
            j = _reflect_index(i, n)
            return self._prev if j == start - 1 else pending[j - start]

        window = torch.cat([frame(start - 1)[None], pending[: last - start], frame(last)[None]])
        out = [median3x3x3(window[s: min(s + self.chunk_frames, last - start) + 2])
               for s in range(0, last - start, self.chunk_frames)]
        self._prev = pending[last - start - 1]
        self._buffer = [pending[last - start:]] if last < stop else []
        self._first_pending = last
        return torch.cat(out)


def median_filter_video(frames: torch.Tensor, chunk_frames: int = 8) -> torch.Tensor:
    """3x3x3 median filter of a whole uint8 video (T, H, W, C), reflect padding in time and space."""
    stream = StreamingMedian3(frames.shape[0], chunk_frames)
    out = [o for o in (stream.push(frames),) if o is not None]
    rest = stream.finish()
    if rest is not None:
        out.append(rest)
    return torch.cat(out)


def iter_median_filtered(chunks: Iterator[torch.Tensor], num_frames: int, chunk_frames: int = 8
                         ) -> Iterator[torch.Tensor]:
    """Filter a stream of uint8 chunks (F, H, W, C) lazily; yields filtered chunks in order."""
    stream = StreamingMedian3(num_frames, chunk_frames)
    for chunk in chunks:
        out = stream.push(chunk)
        if out is not None and out.shape[0]:
            yield out
    rest = stream.finish()
    if rest is not None and rest.shape[0]:
        yield rest
