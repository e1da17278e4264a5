"""The app's logic without a server: scenario mapping, input and settings checks, session files, preview images."""

from __future__ import annotations

import numpy as np
import pytest

from vexpress.app.core import (
    MOTION_TRANSFER,
    SCENARIOS,
    STILL_HEAD,
    Engine,
    Request,
    SessionFiles,
    Settings,
    preview_frames,
    preview_images,
    sampler_defaults,
    sampler_names,
    strategy_for,
)
from vexpress.errors import InputError


def test_scenarios_map_to_the_retarget_strategies():
    from vexpress.kps.retarget import STRATEGIES

    assert [strategy_for(s) for s in SCENARIOS] == ["fix_face", "no_retarget", "naive_retarget"]
    transfer = "Transfer the driving head motion to this face"
    assert {strategy_for(transfer, m) for m in MOTION_TRANSFER} == {"naive_retarget", "offset_retarget"}
    assert strategy_for(STILL_HEAD, "rigid head shift (offset_retarget)") == "fix_face"
    assert set(SCENARIOS.values()) | set(MOTION_TRANSFER.values()) <= set(STRATEGIES)
    with pytest.raises(InputError):
        strategy_for("dance")


@pytest.mark.parametrize("request_, words", [
    (Request(None, "a.wav"), ["reference photo", "upload"]),
    (Request("a.jpg", None), ["speech", "microphone"]),
    (Request("a.jpg", "a.wav", "Follow the driving video"), ["driving video", STILL_HEAD]),
    (Request("a.jpg", "a.wav", "Follow the driving video", "notes.txt"), ["notes.txt", ".mp4"]),
])
def test_missing_or_wrong_inputs_are_one_line_errors(request_, words):
    with pytest.raises(InputError) as err:
        request_.check()
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_settings_checks_and_options():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"sampler": {"name": "unipc"}, "num_inference_steps": None, "guidance_scale": 3.5,
                            "reference_attention_weight": 0.95, "audio_attention_weight": 3.0,
                            "median_filter": True, "seed": 42, "audio_guidance_scale": None,
                            "context_frames": 24, "context_overlap": 4, "decode_chunk_size": 8, "crf": 18})
    settings = Settings.from_config(cfg)
    assert settings.sampler == "unipc" and settings.resolved_steps() == 10
    options = settings.options(cfg)
    assert options["num_inference_steps"] == 10 and options["seed"] == 42 and options["sampler"] == "unipc"
    assert 0 <= Settings(seed=-1).options(cfg)["seed"] < 2**31
    assert {"ddim", "dpmpp", "unipc"} <= set(sampler_names()) and sampler_defaults("ddim") == (25, 3.5)
    for key, value in (("num_inference_steps", "None"), ("seed", 1.5), ("guidance_scale", "strong"),
                       ("median_filter", "yes")):
        with pytest.raises(InputError, match=key):
            Settings.from_config(OmegaConf.merge(cfg, {key: value}))
    for bad, word in ((Settings(sampler="euler"), "sampler"), (Settings(steps=0), "num_inference_steps"),
                      (Settings(guidance_scale=-1), "guidance_scale"),
                      (Settings(audio_attention_weight=float("nan")), "audio_attention_weight")):
        with pytest.raises(InputError, match=word):
            bad.check()


def test_session_files_are_deleted_with_the_session(tmp_path):
    cache = tmp_path / "cache"
    files = SessionFiles(tmp_path / "videos", cache_dirs=[cache])
    upload = cache / "abc" / "photo.jpg"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"x")
    files.track("s1", upload, None)
    video = files.output_path("s1")
    video.write_bytes(b"v")
    files.track("s1", video)
    served = cache / "def" / video.name  # the web server's copy of the video
    served.parent.mkdir()
    served.write_bytes(b"v")
    other = files.output_path("s2")
    other.write_bytes(b"w")
    assert files.output_path("s1") != video
    assert files.cleanup("s1") == 3
    assert not upload.exists() and not served.exists() and not video.exists()
    assert not upload.parent.exists() and not served.parent.exists()
    assert other.exists() and files.sessions() == ["s2"]
    assert files.cleanup("s1") == 0
    files.cleanup_all()
    assert not other.exists() and files.sessions() == []


def test_preview_shows_the_crop_and_the_keypoints(sample_photo, sample_speech, tmp_path):
    from omegaconf import OmegaConf

    from vexpress.pipelines.vexpress_pipeline import prepare_inputs

    inputs = prepare_inputs(str(sample_photo), str(sample_speech(0.5)), height=64, width=64, fps=10)
    items = preview_images(inputs)
    assert [img.shape for img, _ in items] == [(64, 64, 3)] * 3  # crop, crop + keypoints, one V-Kps (still head)
    crop, overlay, kps = (img for img, _ in items)
    drawn = kps.any(-1)
    assert drawn.any() and np.array_equal(overlay[drawn], kps[drawn]) and np.array_equal(overlay[~drawn], crop[~drawn])
    moving = np.stack([inputs.kps[0] + i for i in range(20)])
    assert preview_frames(20, moving) == [0, 6, 13, 19]

    class NoModel:  # Engine.prepare needs no network: only the pipeline's face analyzer
        face_analyzer = None

    cfg = OmegaConf.create({"height": 64, "width": 64, "fps": 10, "crop": "auto", "crop_scale": 1.9})
    engine = Engine(cfg, NoModel(), SessionFiles(tmp_path / "v"))
    req = Request(str(sample_photo), str(sample_speech(0.5)))
    first = engine.prepare(req, "s")
    assert engine.prepare(req, "s") is first  # preview, then generate: read once
    assert first.num_frames == 5 and first.retarget == "fix_face"
