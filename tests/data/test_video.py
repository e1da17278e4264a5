"""PyAV seek decoding returns exactly the frames of a full decode; bad files give one-line errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from vexpress.data.video import VideoReader, probe_video, read_all_frames, write_video
from vexpress.errors import InputError


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (45, 32, 48, 3), dtype=np.uint8)
    frames[:, :4] = np.arange(45, dtype=np.uint8)[:, None, None, None] * 5  # frame number stripe
    path = tmp_path_factory.mktemp("v") / "v.mp4"
    write_video(path, frames, fps=30000 / 1001, gop=8, audio=np.zeros(16000, np.float32))
    return path


def test_probe(video):
    info = probe_video(video)
    assert (info.width, info.height, info.num_frames, info.has_audio) == (48, 32, 45, True)
    assert info.fps == pytest.approx(29.97, abs=0.01)


def test_seek_equals_full_decode(video):
    full = read_all_frames(video)
    reader = VideoReader(video, max_forward=4)
    assert len(reader) == 45 and reader.keyframes[:2] == [0, 8]
    for idx in ([0], [44], [10, 11, 12], [40, 3, 22, 3], list(range(0, 45, 7)), [17, 16, 15]):
        got = reader.get(idx)
        assert np.array_equal(got, full[idx]), idx
    clone = pickle.loads(pickle.dumps(reader))  # works in DataLoader workers
    assert np.array_equal(clone.get([30]), full[[30]])


def test_out_of_range(video):
    with pytest.raises(InputError, match="out of range"):
        VideoReader(video).get([45])


def test_not_a_video(tmp_path):
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError) as err:
        VideoReader(bad)
    assert "\n" not in str(err.value)
    img = tmp_path / "a.wav"
    from vexpress.audio import save_wav

    save_wav(img, np.zeros(1600, np.float32))
    with pytest.raises(InputError, match="no video stream"):
        VideoReader(img)


def test_truncated_file(video, tmp_path):
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as err:  # refused when opened, or when the missing frames are decoded
        reader = VideoReader(cut)
        reader.get(list(range(len(reader))))
        read_all_frames(cut)
    assert "\n" not in str(err.value)


def test_writer_rejects_bad_frames(tmp_path):
    with pytest.raises(InputError):
        write_video(tmp_path / "x.mp4", np.zeros((3, 8, 8)), fps=25)
    assert not (tmp_path / "x.mp4").exists()


def test_writer_is_deterministic(tmp_path):
    """The same frames make the same video, pixel for pixel (with libx264's mb-tree on they did not: a synthetic
    clip's files differed between checkouts, and so did everything trained on them)."""
    from vexpress.synthetic.generate import SynthConfig, generate_clip

    frames = generate_clip(SynthConfig(num_identities=2, heldout_identities=1, seconds=1.0, size=64), 0, 0)["frames"]
    decoded = []
    for k in range(3):
        write_video(tmp_path / f"{k}.mp4", frames, fps=25, crf=16, gop=10)
        decoded.append(read_all_frames(tmp_path / f"{k}.mp4"))
    assert decoded[0].shape == frames.shape
    assert all(np.array_equal(decoded[0], d) for d in decoded[1:])
    assert probe_video(tmp_path / "0.mp4").num_frames == frames.shape[0]
