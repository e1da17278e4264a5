"""MP4 writing: exact frame count and rate, the audio track, atomicity."""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest
import torch

from vexpress.data.video import probe_video, read_all_frames
from vexpress.errors import InputError
from vexpress.pipelines.video_io import VideoWriter, fps_fraction, write_video


@pytest.mark.parametrize("fps", [30, 25, 29.97, 12.5])
def test_exact_frames_and_rate(tmp_path, fps):
    frames = torch.randint(0, 256, (23, 32, 48, 3), dtype=torch.uint8)
    path = write_video(tmp_path / "v.mp4", frames, fps)
    info = probe_video(path)
    assert info.num_frames == 23 and (info.width, info.height) == (48, 32)
    assert abs(info.fps - fps) < 1e-6
    assert not info.has_audio
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # like a normally created file, not a private temp file


def test_audio_track_and_streamed_chunks(tmp_path):
    import av

    chunks = [torch.full((n, 16, 16, 3), 40 * i, dtype=torch.uint8) for i, n in enumerate([3, 5, 2])]
    wav = np.sin(np.arange(44100) / 44100 * 2 * np.pi * 220)[None].repeat(2, 0).astype(np.float32) * 0.3
    path = write_video(tmp_path / "a.mp4", iter(chunks), 10, wav, 44100)
    assert probe_video(path).num_frames == 10
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac" and a.rate == 44100 and a.channels == 2
        assert abs(float(a.duration * a.time_base) - 1.0) < 0.05
    decoded = read_all_frames(path)
    assert abs(int(decoded[4].mean()) - 40) <= 3  # content survives the encode (crf 18)


def test_error_leaves_no_file(tmp_path):
    path = tmp_path / "broken.mp4"

    def frames():
        yield torch.zeros(4, 16, 16, 3, dtype=torch.uint8)
        raise RuntimeError("decoder failed")

    with pytest.raises(RuntimeError):
        write_video(path, frames(), 25)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with VideoWriter(path, 25, 16, 16) as w:
            w.write(torch.zeros(2, 16, 16, 3, dtype=torch.uint8))
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_odd_size_and_bad_fps(tmp_path):
    with pytest.raises(InputError):
        VideoWriter(tmp_path / "x.mp4", 25, 15, 16)
    with pytest.raises(InputError):
        fps_fraction(0)
    assert fps_fraction(29.97) == Fraction(2997, 100)
