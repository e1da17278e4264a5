"""Context windows: every frame covered, the official grid reproduced, short videos handled."""

from __future__ import annotations

import pytest

from vexpress.errors import InputError
from vexpress.pipelines.context import context_windows, frame_window_counts, official_grid_length


def official_grid_windows(num_frames: int, size: int, overlap: int) -> list[list[int]]:
    """Window starts of the official ``uniform`` schedule (step 0, stride 1, open loop) on its own grid."""
    return [list(range(s, s + size)) for s in range(0, num_frames - overlap, size - overlap)]


@pytest.mark.parametrize("size,overlap,n", [(24, 4, 1), (24, 4, 2), (24, 4, 46), (8, 2, 3), (16, 0, 5)])
def test_same_windows_as_official_on_its_grid(size, overlap, n):
    num_frames = (n - 1) * (size - overlap) + size
    ours = [list(w) for w in context_windows(num_frames, size, overlap)]
    assert ours == official_grid_windows(num_frames, size, overlap)


@pytest.mark.parametrize("num_frames", [1, 5, 23, 24, 25, 44, 45, 61, 132, 925])
def test_any_length_is_covered_with_at_least_the_overlap(num_frames):
    windows = context_windows(num_frames, 24, 4)
    counts = frame_window_counts(windows, num_frames)
    assert int(counts.min()) >= 1 and len(counts) == num_frames
    assert all(len(w) == min(24, num_frames) for w in windows)
    assert windows[0].start == 0 and windows[-1].stop == num_frames
    for a, b in zip(windows, windows[1:]):
        assert a.stop - b.start >= 4  # overlap at least as asked


def test_short_video_is_one_window():
    assert [list(w) for w in context_windows(9, 24, 4)] == [list(range(9))]


def test_official_frame_count_rule():
    # spec §1.6: 31.18 s -> 924 frames, 3.98 s -> 104 frames, < 0.8 s -> none (the official code crashes)
    assert official_grid_length(31.18, 30) == 924
    assert official_grid_length(3.98, 30) == 104
    assert official_grid_length(0.5, 30) == 0


@pytest.mark.parametrize("args", [(0, 24, 4), (10, 24, 24), (10, 0, 0), (10, 8, -1)])
def test_bad_settings(args):
    with pytest.raises(InputError):
        context_windows(*args)
