"""The page of ``vexpress-app`` (Gradio Blocks) and its server.

Layout: inputs on the left (reference photo: upload or webcam; speech: upload or microphone; the scenario; an
optional driving video or keypoint file; advanced settings folded away), on the right what the model sees (the face
crop and the drawn keypoints), the result (a playable, downloadable MP4 with the audio) and a line of figures.

Serving: generations go through Gradio's queue one at a time per device (``concurrency_limit=1``; the queue position
is shown on the result); the server binds to ``127.0.0.1`` unless ``host=`` says otherwise, is never shared through
Gradio's tunnel, sends no analytics, keeps no run history, and keeps its files in a private folder that is removed
when it stops. A
session's uploads and videos are deleted when its tab closes (``unload``); Gradio's own ``delete_cache`` sweep
removes anything older than ``delete_cache[1]`` seconds (files of sessions that never reported their end).
"""

# no `from __future__ import annotations`: Gradio finds the `gr.Request` parameters by their (evaluated) annotation
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vexpress.app.core import (
    DRIVING_SUFFIXES,
    MOTION_TRANSFER,
    SCENARIOS,
    STILL_HEAD,
    Engine,
    Request,
    SessionFiles,
    Settings,
    describe_inputs,
    describe_result,
    preview_images,
    sampler_defaults,
    sampler_names,
)
from vexpress.errors import InputError, VExpressError

log = logging.getLogger("vexpress.app")

TITLE = "vexpress: a talking portrait from one photo and a voice"
INTRO = (
    "Give a photo with one face and some speech; pick a scenario. **Still head**: the face speaks, the head stays "
    "still. **Follow the driving video**: the face moves exactly as in the driving video (the same person, framed "
    "alike). **Transfer the driving head motion**: another person's head motion, fitted to this face. "
    "*Preview* shows what the model sees; *Generate* makes the video."
)
SCENARIO_INFO = "Still head needs no driving input; the two others need a driving video or keypoint file."
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _quiet_environment() -> None:
    """No analytics, no hub access, no telemetry: set before Gradio is imported."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def _gr_error(err: VExpressError):
    import gradio as gr

    return gr.Error(str(err), print_exception=False)


def build_app(engine: Engine, cfg: Any):
    """The Blocks page around ``engine`` (not launched)."""
    _quiet_environment()
    import gradio as gr

    defaults = Settings.from_config(cfg)
    height, width = engine.size
    delete_cache = cfg.get("delete_cache")
    with gr.Blocks(title="vexpress", analytics_enabled=False,
                   delete_cache=tuple(int(v) for v in delete_cache) if delete_cache else None) as app:
        gr.Markdown(f"## {TITLE}\n{INTRO}")
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.Image(label="Reference photo", sources=["upload", "webcam"], type="filepath",
                                 image_mode=None, elem_id="photo", height=280)
                speech = gr.Audio(label="Speech", sources=["upload", "microphone"], type="filepath",
                                  elem_id="speech")
                scenario = gr.Radio(list(SCENARIOS), value=STILL_HEAD, label="Scenario", info=SCENARIO_INFO,
                                    elem_id="scenario")
                driving = gr.File(label="Driving video or keypoint file (optional)", type="filepath",
                                  file_types=list(DRIVING_SUFFIXES), elem_id="driving", height=120)
                with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
                    sampler = gr.Dropdown(list(sampler_names()), value=defaults.sampler, label="Sampler",
                                          info="ddim: the official sampler; dpmpp and unipc need fewer steps; lcm "
                                               "only for a distilled model")
                    steps = gr.Slider(1, 100, value=defaults.resolved_steps(), step=1, label="Steps")
                    guidance = gr.Slider(0.0, 10.0, value=defaults.guidance_scale, step=0.1,
                                         label="Guidance scale", info="official 3.5; <= 1: no guidance")
                    ref_weight = gr.Slider(0.0, 2.0, value=defaults.reference_attention_weight, step=0.05,
                                           label="Reference attention weight", info="official 0.95")
                    audio_weight = gr.Slider(0.0, 6.0, value=defaults.audio_attention_weight, step=0.1,
                                             label="Audio attention weight", info="official 3.0")
                    median = gr.Checkbox(value=defaults.median_filter, label="Anti-flicker (3x3x3 median filter)")
                    seed = gr.Number(value=defaults.seed, precision=0, label="Seed (-1: a new one every time)")
                    motion = gr.Radio(list(MOTION_TRANSFER), value=next(iter(MOTION_TRANSFER)),
                                      label="Head-motion transfer (third scenario)")
                with gr.Row():
                    preview_btn = gr.Button("Preview", elem_id="preview-button")
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-button")
            with gr.Column(scale=1):
                seen = gr.Gallery(label="What the model sees", columns=3, height=230, object_fit="contain",
                                  elem_id="seen", interactive=False)
                result = gr.Video(label=f"Result ({width}x{height}, MP4 with audio)", elem_id="result",
                                  interactive=False, buttons=["download"], height=360)
                details = gr.Markdown(elem_id="details")

        inputs = [photo, speech, scenario, driving, motion]

        # The events get the uploads' file records (preprocess=False), not files opened by Gradio: an unreadable photo
        # then gets our one-line message instead of Gradio's generic one. Gradio still checks that every path lies
        # in its upload folder before the handler runs.
        def on_preview(photo_file, speech_file, scenario_label, driving_file, motion_label, request: gr.Request):
            photo_path, speech_path, driving_path = _path(photo_file), _path(speech_file), _path(driving_file)
            session = request.session_hash if request is not None else None
            engine.files.track(session, photo_path, speech_path, driving_path)
            req = Request(photo_path, speech_path, scenario_label, driving_path, motion_label)
            try:
                prepared = engine.prepare(req, session)
            except VExpressError as err:
                raise _gr_error(err) from None
            return preview_images(prepared), describe_inputs(prepared, scenario_label)

        def on_generate(photo_file, speech_file, scenario_label, driving_file, motion_label, sampler_name,
                        num_steps, guidance_scale, reference_weight, audio_attention, median_filter, seed_value,
                        request: gr.Request, progress=gr.Progress(track_tqdm=True)):
            photo_path, speech_path, driving_path = _path(photo_file), _path(speech_file), _path(driving_file)
            session = request.session_hash if request is not None else None
            engine.files.track(session, photo_path, speech_path, driving_path)
            req = Request(photo_path, speech_path, scenario_label, driving_path, motion_label)
            try:
                settings = Settings(sampler=str(sampler_name), steps=_int(num_steps, "steps"),
                                    guidance_scale=_float(guidance_scale, "guidance_scale"),
                                    reference_attention_weight=_float(reference_weight, "reference_attention_weight"),
                                    audio_attention_weight=_float(audio_attention, "audio_attention_weight"),
                                    median_filter=bool(median_filter),
                                    seed=_or(_int(seed_value, "seed"), defaults.seed))
                settings.check()
                progress(0.0, desc="reading the inputs")
                prepared = engine.prepare(req, session)
            except VExpressError as err:
                raise _gr_error(err) from None
            seen_items = preview_images(prepared)
            text = describe_inputs(prepared, scenario_label)
            yield seen_items, None, text + "\n\ngenerating..."
            try:
                path, info = engine.generate(prepared, settings, session)
            except VExpressError as err:
                raise _gr_error(err) from None
            yield seen_items, str(path), text + "\n\n" + describe_result(info)

        def on_sampler(name):
            num_steps, guidance_scale = sampler_defaults(str(name))
            return gr.update(value=num_steps), gr.update(value=guidance_scale)

        def on_unload(request: gr.Request):
            if request is not None:
                engine.end_session(request.session_hash)

        preview_btn.click(on_preview, inputs, [seen, details], api_name="preview", concurrency_limit=2,
                          concurrency_id="prepare", preprocess=False)
        generate_btn.click(on_generate, [*inputs, sampler, steps, guidance, ref_weight, audio_weight, median, seed],
                           [seen, result, details], api_name="generate", concurrency_limit=1,
                           concurrency_id="device", show_progress_on=[result], preprocess=False)
        sampler.change(on_sampler, sampler, [steps, guidance], api_visibility="private", queue=False)
        app.unload(on_unload)
    return app


def _path(payload: Any) -> str | None:
    """The local path of an upload's file record (or of a plain path)."""
    if payload is None or payload == "":
        return None
    if isinstance(payload, dict):
        return payload.get("path") or None
    return str(payload)


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _float(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} must be a number") from None


def _int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}={value!r} must be a whole number") from None
    if not number.is_integer():
        raise InputError(f"{name}={value!r} must be a whole number")
    return int(number)


# --------------------------------------------------------------------------------------------------------------
# serving
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Server:
    """A running app: ``url``, the Gradio ``app``, the ``engine``; :meth:`close` stops it and removes its files."""

    app: Any
    engine: Engine
    url: str
    work_dir: Path
    owns_work_dir: bool
    _closed: bool = field(default=False, repr=False)

    previous_temp_dir: str | None = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.app.close()
        except Exception as err:  # noqa: BLE001 - already stopped (Ctrl-C) or half started: clean up regardless
            log.debug("closing the server: %s", err)
        finally:
            self.engine.files.cleanup_all()
            if self.owns_work_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)
            if self.previous_temp_dir is None:
                os.environ.pop("GRADIO_TEMP_DIR", None)
            else:
                os.environ["GRADIO_TEMP_DIR"] = self.previous_temp_dir

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_config(cfg: Any) -> None:
    """Options of the app that would only fail later: one-line :class:`InputError` naming the key."""
    from omegaconf import OmegaConf

    from vexpress.pipelines.vexpress_pipeline import check_options

    if OmegaConf.is_config(cfg) and OmegaConf.is_missing(cfg, "weights"):
        raise InputError("weights: none given; start with weights=EXPORT_DIR (a training export), the folder of the "
                         "official V-Express files, or weights=tiny (a random model, to try the page)")
    check_options(height=int(cfg.height), width=int(cfg.width), fps=float(cfg.fps),
                  context_frames=int(cfg.context_frames), context_overlap=int(cfg.context_overlap),
                  decode_chunk_size=int(cfg.decode_chunk_size), num_inference_steps=None)
    Settings.from_config(cfg).check()
    port = cfg.get("port")
    if port is not None and not (isinstance(port, int) and 0 <= port < 65536):
        raise InputError(f"port={port} must be a TCP port number (e.g. port=7860)")
    delete_cache = cfg.get("delete_cache")
    if delete_cache is not None and (len(delete_cache) != 2 or any(int(v) <= 0 for v in delete_cache)):
        raise InputError(f"delete_cache={list(delete_cache)} must be [every_seconds, older_than_seconds], both > 0")


def start(cfg: Any, pipe: Any | None = None, block: bool = False) -> Server:
    """Load the model (unless ``pipe`` is given), build the page and launch it on ``cfg.host:cfg.port``.

    ``block=False`` returns the running :class:`Server` (tests, notebooks); ``block=True`` serves until Ctrl-C, then
    stops and removes the app's files.
    """
    check_config(cfg)
    host = str(cfg.get("host") or "127.0.0.1")
    if host not in LOOPBACK:
        log.warning("host=%s: the app is reachable from other machines; it has no login", host)
    work_dir_cfg = cfg.get("work_dir")
    if work_dir_cfg:
        work_dir, owns = Path(str(work_dir_cfg)).expanduser(), False
        work_dir.mkdir(parents=True, exist_ok=True)
    else:
        work_dir, owns = Path(tempfile.mkdtemp(prefix="vexpress-app-")), True
    _quiet_environment()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's start-up self-checks, one line per request
    cache_dir = work_dir / "gradio"
    previous_temp_dir = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(cache_dir)  # Gradio reads it when the page is built
    try:
        if pipe is None:
            from vexpress.cli.generate import build_pipeline

            pipe = build_pipeline(cfg)
        files = SessionFiles(work_dir / "videos", cache_dirs=[cache_dir])
        engine = Engine(cfg, pipe, files)
        app = build_app(engine, cfg)
        app.queue(max_size=int(cfg.get("queue_size") or 16), default_concurrency_limit=1)
        port = cfg.get("port")
        _, url, _ = app.launch(
            server_name=host, server_port=None if port in (None, 0) else int(port), share=False,
            inbrowser=bool(cfg.get("open_browser", False)), prevent_thread_lock=True, quiet=True,
            show_error=False, max_file_size=cfg.get("max_file_size"), ssr_mode=False, pwa=False,
            mcp_server=False, enable_monitoring=False, run_history=False, footer_links=["api", "settings"],
        )
    except BaseException:
        if owns:
            shutil.rmtree(work_dir, ignore_errors=True)
        if previous_temp_dir is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous_temp_dir
        raise
    server = Server(app, engine, str(url).rstrip("/") + "/", work_dir, owns, previous_temp_dir=previous_temp_dir)
    print(f"vexpress-app: open {server.url} (Ctrl-C stops it)", flush=True)
    if not block:
        return server
    import signal
    import threading

    def on_term(signum, frame):  # noqa: ARG001 - SIGTERM stops the app like Ctrl-C (its files are removed)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        app.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        server.close()
        print("vexpress-app: stopped; its files are removed", flush=True)
    return server
