"""vexpress-extract-kps output handling: names checked before any work, both files or none."""

from __future__ import annotations

import av
import pytest

from tests.helpers.cli import run_task
from tests.preprocessing.test_kps_extract import _cartoon_video
from vexpress.errors import InputError
from vexpress.preprocessing.kps_extract import check_output_names, extract_kps, extract_kps_and_audio


def _run_cli(capsys, **overrides) -> tuple[int, str]:
    from vexpress.cli.extract_kps import run

    return run_task(capsys, "extract_kps", run, [f"{k}={v}" for k, v in overrides.items()])


def _half_truncated(tmp_path):
    """A video whose index is at the front, cut inside an audio packet at about 70% of the file: the frames up to
    the cut decode (keypoints can be extracted), the audio does not."""
    _cartoon_video(tmp_path / "full.mp4")
    fast = tmp_path / "fast.mp4"
    with av.open(str(tmp_path / "full.mp4")) as src, \
            av.open(str(fast), "w", format="mp4", options={"movflags": "faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    data = fast.read_bytes()
    with av.open(str(fast)) as c:
        packets = [(p.pos, p.size) for p in c.demux(audio=0) if p.pos is not None]
    pos, size = [x for x in packets if x[0] + x[1] < 0.7 * len(data)][-1]
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: pos + size // 2])
    return cut


def test_truncated_video_leaves_no_output(tmp_path, capsys):
    cut = _half_truncated(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    assert extract_kps(cut).shape[0] > 5  # the keypoints alone would succeed
    with pytest.raises(InputError, match="audio"):
        extract_kps_and_audio(cut, out / "k.pth")
    assert list(out.iterdir()) == []  # neither the keypoints nor a temporary file
    code, err = _run_cli(capsys, video=cut, output=tmp_path / "new" / "k.pth", **{"hydra.run.dir": tmp_path / "l"})
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1, err
    assert not (tmp_path / "new").exists()  # the folder the run created is gone again


def test_output_names_are_checked_before_any_work(tmp_path, capsys):
    # the video does not even exist: the name error comes first, and nothing is created
    code, err = _run_cli(capsys, video=tmp_path / "missing.mp4", output=tmp_path / "o" / "X.wav")
    assert code == 2 and "must name the keypoint file" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()
    with pytest.raises(InputError, match="must end with .wav"):
        check_output_names(tmp_path / "k.pth", tmp_path / "k.pth")
    with pytest.raises(InputError, match="must name the keypoint file"):
        check_output_names(tmp_path / "k", tmp_path / "k.wav")
    check_output_names(tmp_path / "k.pt", tmp_path / "other.wav")
