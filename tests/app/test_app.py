"""The app with the tiny model: the page builds, a real request through ``gradio_client`` makes a video of the right
length, bad input gets the command line's one-line message, and a session's files go when it ends."""

from __future__ import annotations

import sys
import time

import pytest

from tests.app.conftest import app_config
from vexpress.data.video import probe_video


def test_page_builds_with_the_tiny_model(app_export, tmp_path):
    from vexpress.app.core import Engine, SessionFiles
    from vexpress.app.ui import build_app
    from vexpress.cli.generate import build_pipeline

    cfg = app_config(weights=app_export)
    engine = Engine(cfg, build_pipeline(cfg), SessionFiles(tmp_path))
    app = build_app(engine, cfg)
    config = app.get_config_file()
    endpoints = {d.get("api_name") for d in config["dependencies"]}
    assert {"generate", "preview"} <= endpoints
    generate = next(fn for fn in app.fns.values() if fn.api_name == "generate")
    assert generate.concurrency_limit == 1 and generate.concurrency_id == "device"
    props = {c["props"].get("elem_id"): c["props"] for c in config["components"] if c["props"].get("elem_id")}
    assert set(props["photo"]["sources"]) == {"upload", "webcam"}
    assert set(props["speech"]["sources"]) == {"upload", "microphone"}
    assert config["analytics_enabled"] is False
    assert app.delete_cache == (600, 3600)


def test_bad_weights_fail_in_one_line_before_serving(tmp_path, capsys):
    from vexpress.app.cli import run

    with pytest.raises(SystemExit) as code:
        run(app_config())
    err = capsys.readouterr().err.strip().splitlines()
    assert code.value.code == 2 and len(err) == 1 and "weights=" in err[0], err
    with pytest.raises(SystemExit) as code:
        run(app_config(weights=tmp_path / "missing", port=1))
    err = capsys.readouterr().err.strip().splitlines()
    assert code.value.code == 2 and len(err) == 1 and err[0].startswith("error: weights"), err
    assert str(tmp_path / "missing") in err[0]


@pytest.mark.slow
def test_a_request_through_gradio_client(launched, sample_photo, sample_speech, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    server = launched()
    assert server.url.startswith("http://127.0.0.1:")
    client = Client(server.url, download_files=str(tmp_path / "downloads"), verbose=False)
    photo, speech = handle_file(str(sample_photo)), handle_file(str(sample_speech(2.0)))
    # two requests at once: the second waits in the queue (its position is reported) while the first denoises
    args = (photo, speech, "Still head", None, "scaled driving face (naive_retarget)", "ddim", 4, 3.5, 0.95, 3.0,
            True, 7)
    jobs = [client.submit(*args, api_name="/generate") for _ in range(2)]
    observed = set()
    while not all(job.done() for job in jobs):
        for job in jobs:
            status = job.status()
            observed.add((status.code.name, status.rank is not None))
            observed.update(("progress", p.desc) for p in status.progress_data or [])
        time.sleep(0.05)
    assert ("IN_QUEUE", True) in observed and ("progress", "denoising") in observed, observed
    for job in jobs:
        seen, video, details = job.result()
        info = probe_video(video)
        assert (info.num_frames, info.fps, info.width, info.height, info.has_audio) == (20, 10.0, 64, 64, True)
        assert "20 frames" in details and "seed 7" in details
    assert [item["caption"] for item in seen][:2] == ["reference crop 64x64", "photo keypoints (eyes, nose)"]

    # scenario 3 from the official keypoint file, preview only (no model)
    seen, details = client.predict(photo, speech, "Transfer the driving head motion to this face",
                                   handle_file(str(sample_photo.parent / "kps.pth")),
                                   "rigid head shift (offset_retarget)", api_name="/preview")
    assert "`offset_retarget`" in details and len(seen) == 2 + 4

    # bad input: the command line's one-line message, shown in the page; nothing half-written
    videos = sorted(server.work_dir.glob("videos/**/*.mp4"))
    noise = tmp_path / "noise.jpg"
    noise.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(noise)), speech, "Still head", None, "scaled driving face (naive_retarget)",
                       "ddim", 2, 3.5, 0.95, 3.0, True, 7, api_name="/generate")
    assert "noise.jpg" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(AppError, match="needs a driving video"):
        client.predict(photo, speech, "Follow the driving video", None, "scaled driving face (naive_retarget)",
                       api_name="/preview")
    assert sorted(server.work_dir.glob("videos/**/*.mp4")) == videos
    assert not list(server.work_dir.rglob("*.tmp-part"))

    # a request naming a server file directly (not an upload) is refused before the app sees it
    import httpx

    outside = {"path": str(sample_photo), "meta": {"_type": "gradio.FileData"}}
    call = httpx.post(server.url + "gradio_api/call/preview",
                      json={"data": [outside, outside, "Still head", None, None]}, timeout=60)
    with httpx.stream("GET", server.url + f"gradio_api/call/preview/{call.json()['event_id']}", timeout=60) as s:
        events = [line for line in s.iter_lines() if line.startswith("event:")]
    assert "event: error" in events and "event: complete" not in events, events
    assert all(str(sample_photo) != str(p) for s in server.engine.files.sessions()
               for p in server.engine.files.tracked(s))

    # the session's uploads and videos are deleted when it ends
    (session,) = server.engine.files.sessions()
    kept = server.engine.files.tracked(session)
    assert kept and all(p.exists() for p in kept)
    assert server.engine.end_session(session) >= 3
    assert not any(p.exists() for p in kept) and not list(server.work_dir.glob("videos/**/*.mp4"))
    client.close()


def test_help_names_the_options():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "vexpress.app", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    for key in ("vexpress-app", "weights", "port"):
        assert key in out.stdout


def test_console_script_and_extra_are_declared():
    import configparser
    import importlib

    from vexpress.utils.paths import REPO_ROOT

    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    scripts = dict(line.split(" = ") for line in setup["options.entry_points"]["console_scripts"].strip().splitlines())
    module, func = scripts["vexpress-app"].split(":")
    assert callable(getattr(importlib.import_module(module), func))
    extra = setup["options.extras_require"]["app"]
    assert all(name in extra for name in ("gradio", "gradio_client", "selenium"))
    pins = (REPO_ROOT / "requirements" / "constraints.txt").read_text().lower().splitlines()
    assert all(any(p.startswith(f"{name}==") for p in pins) for name in ("gradio", "gradio_client", "selenium"))
