"""``vexpress-generate`` failure modes found by testing: what is checked first, typed options, unwritable and stale
outputs, truncated driving videos. Every user mistake is one ``error:`` line, exit code 2, and no file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.pipelines.test_cli import VENV_BIN, assert_user_error, run_cli
from vexpress.errors import InputError
from vexpress.pipelines.video_io import TMP_SUFFIX


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TMP_SUFFIX) or p.suffix == ".mp4")


# ---- 1. the weights route is checked first ----------------------------------------------------------------------
def test_missing_weights_folder_is_named_before_the_vae(sample_ref, wav_file, tmp_path, capsys):
    missing = tmp_path / "DOES_NOT_EXIST"
    code, err = run_cli(capsys, weights=missing, reference_image=sample_ref, audio=wav_file(0.4),
                        output=tmp_path / "o.mp4", pretrained_dir=tmp_path / "nothing_here")
    assert_user_error(code, err, "weights folder", "DOES_NOT_EXIST", "does not exist")
    assert "vae" not in err.lower()


def test_weights_folder_without_weights_says_what_it_lacks(sample_ref, wav_file, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run_cli(capsys, weights=empty, reference_image=sample_ref, audio=wav_file(0.4),
                        output=tmp_path / "o.mp4", pretrained_dir=tmp_path / "nothing_here")
    assert_user_error(code, err, "empty", "vexpress.json", "denoising_unet")
    assert "sd-vae" not in err
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("denoising_unet.safetensors", "reference_net.bin"):
        (partial / name).write_bytes(b"x")
    code, err = run_cli(capsys, weights=partial, reference_image=sample_ref, audio=wav_file(0.4),
                        output=tmp_path / "o.mp4", pretrained_dir=tmp_path / "nothing_here")
    assert_user_error(code, err, "lacks motion_module, v_kps_guider, audio_projection")
    # all five files present: only now is the missing VAE the problem
    for name in ("motion_module.bin", "v_kps_guider.bin", "audio_projection.bin"):
        (partial / name).write_bytes(b"x")
    code, err = run_cli(capsys, weights=partial, reference_image=sample_ref, audio=wav_file(0.4),
                        output=tmp_path / "o.mp4", pretrained_dir=tmp_path / "nothing_here")
    assert_user_error(code, err, "sd-vae-ft-mse")
    assert _leftovers(tmp_path) == []


# ---- 4. numeric options are typed up front -------------------------------------------------------------------
@pytest.mark.parametrize("key,value,words", [
    ("guidance_scale", "abc", ("guidance_scale", "float")),
    ("audio_guidance_scale", "abc", ("audio_guidance_scale", "float")),
    ("reference_attention_weight", "nan", ("reference_attention_weight", "finite")),
    ("height", "abc", ("height", "int")),
    ("seed", "1.5", ("seed", "int")),
    ("seed", "-3", ("seed", ">= 0")),
    ("num_inference_steps", "many", ("num_inference_steps", "int")),
    ("median_filter", "maybe", ("median_filter", "true or false")),
    ("crf", "99", ("crf", "51")),
    ("driving_max_missing", "abc", ("driving_max_missing", "float")),
    ("driving_max_missing", "1.5", ("driving_max_missing", "[0, 1)")),
])
def test_bad_numeric_option_is_one_line(tmp_path, capsys, key, value, words):
    # fails before anything is read: the photo and audio do not even exist
    code, err = run_cli(capsys, weights="tiny", reference_image=tmp_path / "no.jpg", audio=tmp_path / "no.wav",
                        output=tmp_path / "o.mp4", **{key: value})
    assert_user_error(code, err, *words)
    assert "Traceback" not in err and _leftovers(tmp_path) == []


# ---- 5. the output folder is tried by creating the temporary file, before any work ----------------------------
@pytest.mark.parametrize("output", ["/proc/o.mp4", "/proc/self/sub/o.mp4"])
def test_unwritable_output_fails_before_the_inputs_are_read(tmp_path, capsys, output):
    code, err = run_cli(capsys, weights="tiny", reference_image=tmp_path / "no.jpg", audio=tmp_path / "no.wav",
                        output=output)
    assert_user_error(code, err, "/proc", "output")  # the output is named, not the missing photo
    assert "no.jpg" not in err


def test_unwritable_info_json_fails_before_the_inputs_are_read(tmp_path, capsys):
    code, err = run_cli(capsys, weights="tiny", reference_image=tmp_path / "no.jpg", audio=tmp_path / "no.wav",
                        output=tmp_path / "o.mp4", info_json="/proc/info.json")
    assert_user_error(code, err, "info_json", "/proc")
    assert _leftovers(tmp_path) == []


# ---- 6. stale temporary files ----------------------------------------------------------------------------------
def test_stale_temporary_output_is_removed_by_the_next_run(wav_file, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "o.mp4"
    stale = tmp_path / f".o.mp4.k1lled00{TMP_SUFFIX}"
    stale.write_bytes(b"\0" * 1000)  # what a run killed with SIGKILL leaves
    other = tmp_path / f".other.mp4.k1lled00{TMP_SUFFIX}"
    other.write_bytes(b"\0")
    img = tmp_path / "wall.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(img)
    code, err = run_cli(capsys, weights="tiny", reference_image=img, audio=wav_file(0.4), output=out)
    assert_user_error(code, err, "no face")  # this run fails too, but only after cleaning up
    assert not stale.exists() and other.exists()
    assert _leftovers(tmp_path) == [other.name]


@pytest.mark.parametrize("sig, expected", [(signal.SIGTERM, SystemExit), (signal.SIGINT, KeyboardInterrupt)])
def test_a_stop_signal_that_an_extension_turns_into_another_error_still_stops_as_that_signal(sig, expected):
    """A signal that lands in a C extension's import comes out as ``ImportError: initialization failed`` (pybind11
    wraps the handler's exception; seen in CI when SIGTERM hit mediapipe's import). The run still ends as stopped."""
    from vexpress.cli._common import terminate_cleanly

    # Ctrl-C as a terminal gives it: a test suite started in the background (`cmd &`) inherits SIGINT ignored, and the
    # CLI rightly leaves an ignored Ctrl-C alone
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(expected) as caught:
            with terminate_cleanly(grace_s=None):  # no watchdog: this process outlives the signal
                try:
                    signal.raise_signal(sig)
                except BaseException as err:  # what the extension's init does with the handler's exception
                    raise ImportError("initialization failed") from err
    finally:
        signal.signal(signal.SIGINT, outer)
    if expected is SystemExit:
        assert caught.value.code == 128 + signal.SIGTERM
    with pytest.raises(ImportError):  # without a signal an error stays what it is
        with terminate_cleanly(grace_s=None):
            raise ImportError("initialization failed")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


_STOPPED_RUN = """
import atexit, signal, sys, time
from pathlib import Path
from vexpress.cli._common import terminate_cleanly
from vexpress.pipelines.video_io import reserve_output
from vexpress.utils.io import atomic_dir, atomic_path

out, how = Path(sys.argv[1]), sys.argv[2]
with terminate_cleanly(grace_s=1.0):
    reserve_output(out)
    atomic_path(out.with_suffix(".json")).__enter__()  # an atomic write and a folder under way: their
    atomic_dir(out.with_suffix(".d")).__enter__()      # clean-up never runs, the watchdog's must
    print("reserved", flush=True)
    if how == "swallowed":  # a library that catches what the handler raised and goes on
        try:
            signal.raise_signal(signal.SIGTERM)
        except BaseException:
            pass
        time.sleep(120)
    else:  # the interpreter's shut-down never ends
        atexit.register(time.sleep, 120)
        signal.raise_signal(signal.SIGTERM)
"""


@pytest.mark.parametrize("how", ["swallowed", "stuck_at_exit"])
def test_a_stopped_run_that_does_not_end_is_ended_by_force_without_leftovers(tmp_path, how):
    """The watchdog behind ``terminate_cleanly``: a SIGTERM whose exception is swallowed, or an interpreter
    shut-down that hangs, still ends the process (exit 143) soon after the grace period, its temporary video, file
    and folder removed."""
    out = tmp_path / "o.mp4"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _STOPPED_RUN, str(out), how], capture_output=True, text=True,
                          timeout=100)
    took = time.monotonic() - start
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-2000:]
    assert "reserved" in proc.stdout and "ended by force" in proc.stderr and "SIGTERM" in proc.stderr
    assert took < 100 and _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the atomic write's file and folder went too


def test_the_stop_watchdog_is_disarmed_when_a_run_ends_without_a_signal(tmp_path):
    from vexpress.cli._common import terminate_cleanly

    before = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(before)
    with terminate_cleanly(grace_s=0.1):
        assert any(t.name == "vexpress-stop-watchdog" for t in threading.enumerate())
    for t in threading.enumerate():
        if t.name == "vexpress-stop-watchdog":
            t.join(timeout=10)
    assert not any(t.name == "vexpress-stop-watchdog" for t in threading.enumerate())
    assert signal.set_wakeup_fd(before) == before  # the wakeup fd was restored


@pytest.mark.slow
def test_killed_runs_leave_at_most_their_temporary_file(sample_ref, wav_file, tmp_path, capsys):
    """A real ``vexpress-generate`` process: SIGTERM leaves nothing; SIGKILL leaves the temporary file, which the
    next run for the same output removes."""
    audio = wav_file(20.0, name="long.wav")
    out = tmp_path / "o.mp4"
    args = [str(VENV_BIN / "vexpress-generate"), "weights=tiny", f"reference_image={sample_ref}", f"audio={audio}",
            f"output={out}", "height=64", "width=64", "fps=10", "num_inference_steps=50", "context_frames=8",
            "context_overlap=2", "progress=false"]

    logs = tmp_path.parent / f"{tmp_path.name}_stderr"  # a file, not a pipe: a full pipe would block the exit
    logs.mkdir()

    def start_and_wait_for_temporary(name):
        err = open(logs / name, "w")
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONFAULTHANDLER": "1"})
        err.close()
        for _ in range(1200):  # up to 120 s on a loaded machine
            tmps = [p for p in tmp_path.iterdir() if p.name.endswith(TMP_SUFFIX)]
            if tmps or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, (logs / name).read_text()[-2000:]
        assert len(tmps) == 1 and tmps[0].name.startswith(".o.mp4.")
        return proc, tmps[0]

    def wait_or_dump(proc, name):
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # where it hangs: faulthandler prints every thread's stack on SIGABRT
            proc.send_signal(signal.SIGABRT)
            proc.wait(timeout=30)
            pytest.fail(f"no exit 60 s after the signal; its stderr ends:\n{(logs / name).read_text()[-6000:]}")

    proc, tmp = start_and_wait_for_temporary("term.log")
    proc.send_signal(signal.SIGTERM)
    assert wait_or_dump(proc, "term.log") == 128 + signal.SIGTERM, (logs / "term.log").read_text()[-2000:]
    assert _leftovers(tmp_path) == []

    proc, tmp = start_and_wait_for_temporary("kill.log")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert _leftovers(tmp_path) == [tmp.name]  # SIGKILL: nothing can clean up

    code, err = run_cli(capsys, weights="tiny", reference_image=tmp_path / "no.jpg", audio=audio, output=out)
    assert_user_error(code, err, "no.jpg")
    assert _leftovers(tmp_path) == []


# ---- 3. truncated driving videos -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def truncated_driving(tmp_path_factory):
    """A 132-frame faststart MP4 (the container declares its frames up front) cut at 50 % of its bytes."""
    import av
    from PIL import Image

    from vexpress.data.video import read_all_frames
    from vexpress.utils.paths import samples_dir

    src = samples_dir() / "AOC" / "gt.mp4"
    if not src.is_file():
        pytest.skip(reason=f"shared sample video not present at {src}")
    frames = read_all_frames(src)[:132]
    frames = np.stack([np.asarray(Image.fromarray(f).resize((192, 192))) for f in frames])
    folder = tmp_path_factory.mktemp("driving")
    full = folder / "full.mp4"
    with av.open(str(full), "w", format="mp4", options={"movflags": "faststart"}) as c:
        s = c.add_stream("libx264", rate=30)
        s.width = s.height = 192
        s.pix_fmt = "yuv420p"
        for f in frames:
            for pk in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    data = full.read_bytes()
    cut = folder / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    return full, cut


@pytest.mark.slow
def test_truncated_driving_video_is_refused_and_the_frames_read_are_reported(truncated_driving):
    from vexpress.pipelines.inputs import declared_frames, driving_tolerance, load_driving

    full, cut = truncated_driving
    assert declared_frames(full) == declared_frames(cut) == 132
    drv = load_driving(full, 64, 64)
    assert drv.frames_read == 132 and any("read 132 frames of the 132 declared" in n for n in drv.notes)
    with pytest.raises(InputError) as err:
        load_driving(cut, 64, 64)
    msg = str(err.value)
    assert "cut.mp4" in msg and "of the 132 frames" in msg and "truncated" in msg and "\n" not in msg
    with driving_tolerance(0.9):  # the user accepts it: used, with a warning note naming the count
        drv = load_driving(cut, 64, 64)
    assert 30 < drv.frames_read < 100 and drv.kps.shape[0] == drv.frames_read
    assert any(f"read {drv.frames_read} frames of the 132 declared" in n and "could not be decoded" in n
               for n in drv.notes)
    # a driving video longer than the audio is read only as far as needed; that is no truncation
    drv = load_driving(cut, 64, 64, max_seconds=0.5)
    assert drv.frames_read < 30 and "enough for the audio" in drv.notes[-1]


def test_truncated_driving_video_through_the_cli(truncated_driving, sample_ref, wav_file, tmp_path, capsys):
    _, cut = truncated_driving
    code, err = run_cli(capsys, weights="tiny", reference_image=sample_ref, audio=wav_file(4.0), driving=cut,
                        output=tmp_path / "o.mp4")
    assert_user_error(code, err, "cut.mp4", "truncated", "driving_max_missing")
    assert _leftovers(tmp_path) == []
