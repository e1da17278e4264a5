"""``vexpress-generate``: help, a real run from an export, and bad inputs (one-line error, exit 2, no file)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vexpress.cli._common import config_path
from vexpress.data.video import probe_video

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    from tests.helpers.tiny import tiny_net, tiny_vae
    from vexpress.models.weights import save_export

    path = tmp_path_factory.mktemp("export") / "tiny"
    return save_export(path, tiny_net(audio_dim=80), tiny_vae(), audio_encoder={"name": "logmel"},
                       extra={"note": "test"})


def compose(**overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    args = [f"{k}={v}" for k, v in overrides.items()]
    with initialize_config_dir(config_dir=config_path(), version_base="1.3"):
        return hydra_compose(config_name="generate", overrides=args)


FAST = dict(height=64, width=64, fps=10, num_inference_steps=1, context_frames=8, context_overlap=2, progress=False)


def run_cli(capsys, **overrides):
    """Run the task in-process; returns (exit code, stderr)."""
    from vexpress.cli.generate import run

    cfg = compose(**{**FAST, **overrides})
    try:
        run(cfg)
        code = 0
    except SystemExit as err:
        code = err.code
    return code, capsys.readouterr().err


def assert_user_error(code, err, *words):
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], lines[0]


def test_help_lists_the_options():
    out = subprocess.run([str(VENV_BIN / "vexpress-generate"), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for key in ("reference_image", "audio", "output", "driving", "retarget", "weights", "sampler",
                "guidance_scale", "audio_guidance_scale", "context_frames", "median_filter"):
        assert key in out.stdout


def test_generates_from_an_export(export_dir, sample_ref, wav_file, tmp_path, capsys):
    out = tmp_path / "out" / "video.mp4"
    code, err = run_cli(capsys, weights=export_dir, reference_image=sample_ref, audio=wav_file(0.55), output=out,
                        info_json=tmp_path / "info.json")
    assert code == 0, err
    info = probe_video(out)
    assert info.num_frames == round(0.55 * 10) and info.fps == pytest.approx(10) and info.has_audio
    assert (tmp_path / "info.json").is_file()
    import av

    with av.open(str(out)) as c:  # 0.55 s of speech under 6 frames at 10 fps: the audio track is padded to 0.6 s
        a = c.streams.audio[0]
        assert float(a.duration * a.time_base) == pytest.approx(0.6, abs=1e-3)
    assert [p.name for p in out.parent.iterdir()] == ["video.mp4"]  # no temporary file left


def test_no_face(export_dir, wav_file, tmp_path, capsys):
    from PIL import Image

    img = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(img)
    out = tmp_path / "o.mp4"
    code, err = run_cli(capsys, weights=export_dir, reference_image=img, audio=wav_file(0.4), output=out)
    assert_user_error(code, err, "no face", "wall.png")
    assert not out.exists()


def test_several_faces_use_the_largest_with_a_warning(sample_ref, caplog):
    from PIL import Image

    from vexpress.pipelines.inputs import prepare_reference
    from vexpress.utils.paths import samples_dir

    big = np.asarray(Image.open(sample_ref).convert("RGB"))
    small = np.asarray(Image.open(samples_dir() / "tys" / "ref.jpg").convert("RGB").resize((224, 224)))
    canvas = np.full((512, 800, 3), 90, np.uint8)
    canvas[:, :512] = big
    canvas[150:374, 560:784] = small
    with caplog.at_level(logging.WARNING, logger="vexpress.generate"):
        ref = prepare_reference(canvas, 64, 64)
    assert ref.num_faces == 2 and any("largest" in n for n in ref.notes)
    assert any("largest" in r.message for r in caplog.records)
    assert ref.box[2] <= 512 + 1e-3  # the crop is around the big face on the left


@pytest.mark.parametrize("which", ["reference_image", "audio", "driving"])
def test_unreadable_files(export_dir, sample_ref, wav_file, tmp_path, capsys, which):
    bad = tmp_path / {"reference_image": "photo.jpg", "audio": "speech.mp3", "driving": "drive.mp4"}[which]
    bad.write_text("this is not media")
    args = dict(weights=export_dir, reference_image=sample_ref, audio=wav_file(0.4), output=tmp_path / "o.mp4")
    args[which] = bad
    code, err = run_cli(capsys, **args)
    assert_user_error(code, err, bad.name)
    assert not (tmp_path / "o.mp4").exists()


def test_missing_driving_keypoint_file(export_dir, sample_ref, wav_file, tmp_path, capsys):
    code, err = run_cli(capsys, weights=export_dir, reference_image=sample_ref, audio=wav_file(0.4),
                        driving=tmp_path / "none.pth", output=tmp_path / "o.mp4")
    assert_user_error(code, err, "none.pth")


def test_output_that_cannot_be_written(export_dir, sample_ref, wav_file, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, err = run_cli(capsys, weights=export_dir, reference_image=sample_ref, audio=wav_file(0.4),
                        output=blocker / "o.mp4")
    assert_user_error(code, err, "file.txt")
    code, err = run_cli(capsys, weights=export_dir, reference_image=sample_ref, audio=wav_file(0.4),
                        output=tmp_path)
    assert_user_error(code, err, "directory")


def test_bad_options_fail_before_any_work(sample_ref, wav_file, tmp_path, capsys):
    code, err = run_cli(capsys, weights=tmp_path / "nothing", reference_image=sample_ref, audio=wav_file(0.4),
                        output=tmp_path / "o.mp4", context_frames=40)
    assert_user_error(code, err, "context_frames")
    code, err = run_cli(capsys, weights=tmp_path / "nothing", reference_image=sample_ref, audio=wav_file(0.4),
                        output=tmp_path / "o.mp4")
    assert_user_error(code, err, "nothing")


def test_driving_video_with_faceless_frames_is_interpolated(sample_ref, tmp_path):
    from vexpress.data.video import read_all_frames
    from vexpress.pipelines.inputs import load_driving
    from vexpress.pipelines.video_io import write_video
    from vexpress.utils.paths import samples_dir

    frames = read_all_frames(samples_dir() / "AOC" / "gt.mp4")[:20].copy()
    frames[6:9] = 0  # three black frames: no face
    video = write_video(tmp_path / "drive.mp4", frames, 25)
    drv = load_driving(video, 64, 64)
    assert drv.missing == [6, 7, 8] and drv.fps == pytest.approx(25)
    assert drv.notes and "interpolated" in drv.notes[0]
    assert np.isfinite(drv.kps).all()
    # interpolated frames lie between their neighbours
    lo, hi = drv.kps[5, 2], drv.kps[9, 2]
    assert np.all(drv.kps[7, 2] >= np.minimum(lo, hi) - 1e-4) and np.all(drv.kps[7, 2] <= np.maximum(lo, hi) + 1e-4)


@pytest.mark.slow
def test_console_script_exit_code(sample_ref, wav_file, tmp_path):
    """The installed entry point: a bad input gives exit code 2, one error line, no traceback, no file."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([str(VENV_BIN / "vexpress-generate"), "weights=tiny", f"reference_image={tmp_path}/no.jpg",
                          f"audio={wav_file(0.4)}", f"output={tmp_path}/o.mp4"], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert [ln for ln in out.stderr.splitlines() if ln.startswith("error:")] == [
        f"error: reference image not found: {tmp_path}/no.jpg (check the path)"]
    assert not (tmp_path / "o.mp4").exists()


def test_wrong_audio_encoder_is_refused(export_dir, sample_ref, wav_file, tmp_path, capsys):
    code, err = run_cli(capsys, weights=export_dir, reference_image=sample_ref, audio=wav_file(0.4),
                        output=tmp_path / "o.mp4", **{"audio_encoder.name": "logmel", "+audio_encoder.n_mels": 40})
    assert_user_error(code, err, "80-d")
    assert not (tmp_path / "o.mp4").exists()
