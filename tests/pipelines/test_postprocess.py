"""The streamed 3x3x3 median filter equals a direct whole-video computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vexpress.pipelines.postprocess import StreamingMedian3, iter_median_filtered, median_filter_video


def direct_median(video: torch.Tensor) -> torch.Tensor:
    """Whole-video reference: (T, H, W, C) -> reflect-pad (time, rows, cols) by 1 -> median of 27 per pixel."""
    x = video.permute(3, 0, 1, 2).float()[None]  # (1, C, T, H, W)
    x = F.pad(x, (1, 1, 1, 1, 1, 1), mode="reflect")[0]
    patches = x.unfold(1, 3, 1).unfold(2, 3, 1).unfold(3, 3, 1)  # (C, T, H, W, 3, 3, 3)
    med = patches.reshape(*patches.shape[:4], 27).median(dim=-1).values
    return med.permute(1, 2, 3, 0).to(torch.uint8)


@pytest.mark.parametrize("num_frames", [2, 3, 7, 17])
@pytest.mark.parametrize("chunk", [1, 2, 5, 8])
def test_streaming_equals_direct(num_frames, chunk):
    g = torch.Generator().manual_seed(num_frames * 10 + chunk)
    video = torch.randint(0, 256, (num_frames, 9, 7, 3), generator=g, dtype=torch.uint8)
    ref = direct_median(video)
    # arrive in uneven chunks
    sizes, i = [], 0
    while i < num_frames:
        sizes.append(min(1 + (i % 3), num_frames - i))
        i += sizes[-1]
    chunks = list(torch.split(video, sizes))
    out = torch.cat(list(iter_median_filtered(iter(chunks), num_frames, chunk)))
    assert torch.equal(out, ref)
    assert torch.equal(median_filter_video(video, chunk), ref)


def test_single_frame_video():
    video = torch.randint(0, 256, (1, 6, 5, 3), dtype=torch.uint8)
    out = median_filter_video(video)
    assert out.shape == video.shape
    # time is constant, so it is a 3x3 spatial median counted three times = the 3x3 median
    x = F.pad(video.permute(0, 3, 1, 2).float(), (1, 1, 1, 1), mode="reflect")
    ref = x.unfold(2, 3, 1).unfold(3, 3, 1).reshape(1, 3, 6, 5, 9).median(-1).values.permute(0, 2, 3, 1)
    assert torch.equal(out, ref.to(torch.uint8))


def test_removes_single_frame_flicker():
    video = torch.full((5, 8, 8, 3), 100, dtype=torch.uint8)
    video[2, 3, 3] = 255  # an isolated flash
    assert int(median_filter_video(video).max()) == 100


def test_frame_count_is_enforced():
    stream = StreamingMedian3(4)
    stream.push(torch.zeros(3, 4, 4, 3, dtype=torch.uint8))
    with pytest.raises(ValueError):
        stream.finish()
    with pytest.raises(ValueError):
        stream.push(torch.zeros(2, 4, 4, 3, dtype=torch.uint8))
