"""The output file of generation: audio as long as the video, the temporary file reserved up front, stale
temporary files of killed runs removed by the next run (with a real process killed by pid)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from vexpress.errors import InputError
from vexpress.pipelines.video_io import (
    TMP_SUFFIX,
    VideoWriter,
    remove_stale_temporaries,
    reserve_output,
    reserved_for,
    stale_temporaries,
    write_video,
)

AAC_FRAME = 1024


def _durations(path: Path) -> tuple[float, float, int, int]:
    """(video duration, audio stream duration, decoded audio samples, sample rate) measured with PyAV."""
    import av

    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        vd = float(v.duration * v.time_base)
        ad = float(a.duration * a.time_base)
        samples = sum(f.samples for f in c.decode(a))
        return vd, ad, samples, int(a.rate)


@pytest.mark.parametrize("seconds,fps,rate", [(0.3, 30, 16000), (0.55, 10, 16000), (2.37, 25, 48000),
                                              (1.0, 30, 44100), (0.3, 30, 22050), (0.05, 30, 16000),
                                              (1.234, 12.5, 32000)])
def test_audio_track_is_cut_or_padded_to_the_video(tmp_path, seconds, fps, rate):
    frames = int(round(seconds * fps))
    wav = (0.3 * np.sin(np.arange(int(round(seconds * rate))) / rate * 2 * np.pi * 220)).astype(np.float32)
    path = write_video(tmp_path / "v.mp4", torch.zeros(frames, 16, 16, 3, dtype=torch.uint8), fps, wav, rate)
    video_s, audio_s, samples, out_rate = _durations(path)
    assert out_rate == rate
    assert video_s == pytest.approx(float(Fraction(frames) / Fraction(str(fps))), abs=1e-6)
    assert abs(audio_s - video_s) <= 1e-3  # the audio stream ends with the video (the muxer rounds a few samples)
    want = video_s * rate  # decoders may add the silent tail of the last AAC frame, never a whole frame more
    assert want - 1 <= samples < want + AAC_FRAME


def test_audio_longer_than_the_video_is_cut_and_shorter_is_padded(tmp_path):
    rate = 16000
    long = np.full(rate * 2, 0.25, np.float32)  # 2 s of audio under 1 s of video
    p = write_video(tmp_path / "long.mp4", torch.zeros(10, 16, 16, 3, dtype=torch.uint8), 10, long, rate)
    assert _durations(p)[1] == pytest.approx(1.0, abs=1e-3)
    short = np.full(rate // 4, 0.25, np.float32)  # 0.25 s of audio under 1 s of video: silence after it
    p = write_video(tmp_path / "short.mp4", torch.zeros(10, 16, 16, 3, dtype=torch.uint8), 10, short, rate)
    assert _durations(p)[1] == pytest.approx(1.0, abs=1e-3)


def test_reserve_creates_the_temporary_file_up_front_and_the_writer_adopts_it(tmp_path):
    out = tmp_path / "sub" / "o.mp4"
    with reserve_output(out) as res:
        assert res.tmp.parent == out.parent and res.tmp.name.startswith(".o.mp4.") and res.tmp.is_file()
        assert reserved_for(out) is res
        assert stale_temporaries(out) == []  # locked by this live run
        write_video(out, torch.zeros(3, 16, 16, 3, dtype=torch.uint8), 10)
        assert res.committed and not res.tmp.exists()
    assert out.is_file() and sorted(p.name for p in out.parent.iterdir()) == ["o.mp4"]
    assert reserved_for(out) is None


def test_a_failed_run_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "deeper" / "o.mp4"
    with pytest.raises(RuntimeError):
        with reserve_output(out):
            raise RuntimeError("failed after the reservation")
    assert not (tmp_path / "new").exists()  # no temporary file, no empty folders
    with reserve_output(out):
        with pytest.raises(RuntimeError):
            with VideoWriter(out, 10, 16, 16) as w:
                w.write(torch.zeros(2, 16, 16, 3, dtype=torch.uint8))
                raise RuntimeError("interrupted")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("target", ["/proc/o.mp4", "/proc/self/o.mp4", "FILE/o.mp4", "DIR"])
def test_unwritable_destinations_fail_at_once(tmp_path, target):
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "DIR").mkdir()
    path = Path(target) if target.startswith("/") else tmp_path / target
    with pytest.raises(InputError) as err:
        reserve_output(path)
    msg = str(err.value)
    assert "\n" not in msg and ("choose" in msg or "give a file name" in msg)


_HOLDER = """
import sys, time
from vexpress.pipelines.video_io import reserve_output
res = reserve_output(sys.argv[1])
print(res.tmp, flush=True)
time.sleep(120)
"""


def test_stale_temporary_of_a_killed_process_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "o.mp4"
    unrelated = tmp_path / f".other.mp4.abcd1234{TMP_SUFFIX}"
    unrelated.write_bytes(b"not ours")
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        tmp = Path(proc.stdout.readline().strip())
        assert tmp.is_file()
        # while the process lives, its temporary file is not stale and the next reservation leaves it alone
        assert stale_temporaries(out) == []
        with reserve_output(out) as res:
            assert res.removed_stale == [] and tmp.is_file()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        proc.stdout.close()
    assert tmp.is_file()  # SIGKILL: nothing could clean up
    assert stale_temporaries(out) == [tmp]
    write_video(out, torch.zeros(2, 16, 16, 3, dtype=torch.uint8), 10)  # the next run for this output name
    assert not tmp.exists() and out.is_file()
    assert unrelated.is_file()  # another output's temporary file is not touched
    assert remove_stale_temporaries(out) == []


_STOPPED_BEFORE_THE_WITH = """
import signal, sys, time
from vexpress.pipelines.video_io import reserve_output

def on_term(signum, frame):
    raise SystemExit(128 + signum)  # what vexpress-generate does with SIGTERM

signal.signal(signal.SIGTERM, on_term)
res = reserve_output(sys.argv[1])  # reserved, and the ``with`` that would discard it is never entered
print(res.tmp, flush=True)
time.sleep(120)
"""


def test_a_stop_signal_before_the_with_block_still_removes_the_temporary_file(tmp_path):
    """SIGTERM can land after the reservation is made and before the caller's ``with`` block starts: the process
    exits through ``SystemExit`` and its temporary file is removed at interpreter exit (it used to outlive it)."""
    out = tmp_path / "o.mp4"
    proc = subprocess.Popen([sys.executable, "-c", _STOPPED_BEFORE_THE_WITH, str(out)], stdout=subprocess.PIPE,
                            text=True)
    try:
        tmp = Path(proc.stdout.readline().strip())
        assert tmp.is_file()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        proc.stdout.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
