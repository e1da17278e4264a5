"""What the browser app does, without the page: scenarios, settings, preview images, session files, one generation.

Nothing here imports Gradio, so it is tested (and reusable) on its own. The page (:mod:`vexpress.app.ui`) turns a
:class:`~vexpress.errors.VExpressError` raised here into a ``gr.Error`` with the same one-line message the command
line prints.

Files. Every file a session hands to the app (its uploads) or gets from it (its videos) is recorded in a
:class:`SessionFiles` under the session's id and deleted when the session ends (the page's ``unload`` handler);
videos are written atomically by the pipeline (a temporary file renamed when complete), so a failed or interrupted
generation leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from vexpress.data.video import VIDEO_SUFFIXES
from vexpress.errors import InputError
from vexpress.pipelines.inputs import KPS_SUFFIXES

log = logging.getLogger("vexpress.app")

#: The scenario as the page names it -> retarget strategy (``vexpress.kps.retarget``).
SCENARIOS: dict[str, str] = {
    "Still head": "fix_face",
    "Follow the driving video": "no_retarget",
    "Transfer the driving head motion to this face": "naive_retarget",
}
STILL_HEAD = "Still head"
#: How scenario 3 moves the face (an advanced setting) -> retarget strategy.
MOTION_TRANSFER: dict[str, str] = {
    "scaled driving face (naive_retarget)": "naive_retarget",
    "rigid head shift (offset_retarget)": "offset_retarget",
}


def sampler_names() -> tuple[str, ...]:
    """The samplers ``vexpress.pipelines.schedulers`` knows (the page's choices)."""
    from vexpress.pipelines.schedulers import SAMPLERS

    return tuple(SAMPLERS)


def sampler_defaults(name: str) -> tuple[int, float]:
    """(steps, guidance scale) a sampler uses by default (a distilled sampler runs without guidance)."""
    from vexpress.pipelines import schedulers

    guidance = getattr(schedulers, "default_guidance", None)
    return schedulers.DEFAULT_STEPS.get(name, 25), float(guidance(name)) if guidance is not None else 3.5


#: Driving inputs the page accepts: videos, and keypoint files (ours, or the official kps.pth).
DRIVING_SUFFIXES = VIDEO_SUFFIXES + KPS_SUFFIXES


def strategy_for(scenario: str, motion_transfer: str | None = None) -> str:
    """Retarget strategy of a scenario label (scenario 3 follows the ``motion_transfer`` choice)."""
    if scenario not in SCENARIOS:
        raise InputError(f"scenario {scenario!r} is not one of: {', '.join(SCENARIOS)}")
    strategy = SCENARIOS[scenario]
    if strategy == "naive_retarget" and motion_transfer:
        if motion_transfer not in MOTION_TRANSFER:
            raise InputError(f"motion transfer {motion_transfer!r} is not one of: {', '.join(MOTION_TRANSFER)}")
        strategy = MOTION_TRANSFER[motion_transfer]
    return strategy


@dataclass(frozen=True)
class Request:
    """The user's inputs: file paths (uploads), the scenario label and the motion-transfer choice."""

    photo: str | None
    speech: str | None
    scenario: str = STILL_HEAD
    driving: str | None = None
    motion_transfer: str | None = None

    @property
    def retarget(self) -> str:
        return strategy_for(self.scenario, self.motion_transfer)

    def check(self) -> None:
        """One-line :class:`InputError` for what is missing (before any file is read)."""
        if not self.photo:
            raise InputError("reference photo: none given; upload a photo with one clearly visible face "
                             "(or take one with the webcam)")
        if not self.speech:
            raise InputError("speech: none given; upload an audio file (wav, mp3, m4a, or a video with sound) or "
                             "record one with the microphone")
        if self.retarget != "fix_face" and not self.driving:
            raise InputError(f"scenario '{self.scenario}' needs a driving video or keypoint file; add one, or "
                             f"choose '{STILL_HEAD}'")
        if self.driving and Path(self.driving).suffix.lower() not in DRIVING_SUFFIXES:
            raise InputError(f"driving file {Path(self.driving).name}: not a video or keypoint file; give one of "
                             f"{', '.join(DRIVING_SUFFIXES)}")


@dataclass(frozen=True)
class Settings:
    """The advanced settings of the page (the command line's sampling options)."""

    sampler: str = "ddim"
    steps: int | None = None
    guidance_scale: float = 3.5
    reference_attention_weight: float = 0.95
    audio_attention_weight: float = 3.0
    median_filter: bool = True
    seed: int = 42  # < 0: a new random seed for every video

    @classmethod
    def from_config(cls, cfg: Any) -> "Settings":
        sampler = cfg.get("sampler")
        name = str(sampler.get("name", "ddim")) if isinstance(sampler, Mapping) or hasattr(sampler, "get") \
            else str(sampler or "ddim")

        def number(key: str, default: Any, kind: type) -> Any:
            value = cfg.get(key, default)
            if value is None and key == "num_inference_steps":
                return None
            try:
                if isinstance(value, bool) or (kind is int and float(value) != int(float(value))):
                    raise ValueError
                return kind(float(value)) if kind is int else kind(value)
            except (TypeError, ValueError):
                raise InputError(f"{key}={value!r} must be a{'n integer' if kind is int else ' number'}") from None

        median = cfg.get("median_filter", True)
        if not isinstance(median, bool):
            raise InputError(f"median_filter={median!r} must be true or false")
        return cls(sampler=name, steps=number("num_inference_steps", None, int),
                   guidance_scale=number("guidance_scale", 3.5, float),
                   reference_attention_weight=number("reference_attention_weight", 0.95, float),
                   audio_attention_weight=number("audio_attention_weight", 3.0, float),
                   median_filter=median, seed=number("seed", 42, int))

    def resolved_steps(self) -> int:
        from vexpress.pipelines.schedulers import DEFAULT_STEPS

        return int(self.steps) if self.steps is not None else DEFAULT_STEPS.get(self.sampler, 25)

    def check(self) -> None:
        """One-line :class:`InputError` naming the setting (range checks shared with the command line)."""
        from vexpress.pipelines.vexpress_pipeline import check_options

        if self.sampler not in sampler_names():
            raise InputError(f"sampler {self.sampler!r} is not one of {', '.join(sampler_names())}")
        for name, value in (("guidance_scale", self.guidance_scale),
                            ("reference_attention_weight", self.reference_attention_weight),
                            ("audio_attention_weight", self.audio_attention_weight)):
            if value is None or not np.isfinite(float(value)) or float(value) < 0:
                raise InputError(f"{name}={value} must be a number >= 0")
        steps = self.steps
        if steps is not None and (float(steps) != int(steps) or int(steps) < 1):
            raise InputError(f"num_inference_steps={steps} must be a positive integer")
        check_options(num_inference_steps=self.resolved_steps(),
                      reference_attention_weight=float(self.reference_attention_weight),
                      audio_attention_weight=float(self.audio_attention_weight))

    def options(self, cfg: Any) -> dict[str, Any]:
        """Keyword arguments of ``VExpressPipeline.generate`` (the rest from the app's config)."""
        seed = int(self.seed)
        if seed < 0:
            seed = int(np.random.default_rng().integers(0, 2**31 - 1))
        audio_scale = cfg.get("audio_guidance_scale")
        return dict(num_inference_steps=self.resolved_steps(), guidance_scale=float(self.guidance_scale),
                    audio_guidance_scale=None if audio_scale is None else float(audio_scale),
                    reference_attention_weight=float(self.reference_attention_weight),
                    audio_attention_weight=float(self.audio_attention_weight),
                    context_frames=int(cfg.get("context_frames", 24)),
                    context_overlap=int(cfg.get("context_overlap", 4)), seed=seed, sampler=self.sampler,
                    median_filter=bool(self.median_filter), decode_chunk_size=int(cfg.get("decode_chunk_size", 8)),
                    crf=int(cfg.get("crf", 18)), progress=True)


# --------------------------------------------------------------------------------------------------------------
# session files
# --------------------------------------------------------------------------------------------------------------
_SAFE = re.compile(r"[^A-Za-z0-9_-]")


class SessionFiles:
    """Files of each browser session (its uploads and its videos), deleted when the session ends.

    ``root`` holds one folder per session for the videos; ``cache_dirs`` are folders where the web server keeps
    its own copies of files it serves (Gradio copies every output into ``<cache>/<hash>/<name>``): the copies of a
    session's videos are found there by their (unique) names and deleted with them.
    """

    def __init__(self, root: str | os.PathLike, cache_dirs: Iterable[str | os.PathLike] = ()):
        self.root = Path(root)
        self.cache_dirs = [Path(p) for p in cache_dirs]
        self._files: dict[str, set[Path]] = {}
        self._outputs: dict[str, set[str]] = {}
        self._count = 0
        self._lock = threading.Lock()

    @staticmethod
    def _key(session: str | None) -> str:
        return _SAFE.sub("_", str(session or "anonymous"))[:64] or "anonymous"

    def track(self, session: str | None, *paths: str | os.PathLike | None) -> None:
        """Remember files handed over by ``session`` (None entries are ignored)."""
        with self._lock:
            bucket = self._files.setdefault(self._key(session), set())
            bucket.update(Path(p) for p in paths if p)

    def output_path(self, session: str | None, suffix: str = ".mp4") -> Path:
        """A new, unique path for one of ``session``'s videos (its folder is created)."""
        key = self._key(session)
        with self._lock:
            self._count += 1
            name = f"vexpress-{key[:12]}-{self._count:04d}-{int(time.time())}{suffix}"
            self._outputs.setdefault(key, set()).add(name)
        folder = self.root / key
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def tracked(self, session: str | None) -> set[Path]:
        with self._lock:
            return set(self._files.get(self._key(session), set()))

    def cleanup(self, session: str | None) -> int:
        """Delete everything ``session`` uploaded or received; returns the number of files removed."""
        key = self._key(session)
        with self._lock:
            files = self._files.pop(key, set())
            outputs = self._outputs.pop(key, set())
        removed = 0
        for name in outputs:
            for cache in self.cache_dirs:
                files.update(cache.glob(f"*/{name}"))
        for path in files:
            removed += _remove(path)
        folder = self.root / key
        if folder.is_dir():
            removed += sum(1 for p in folder.rglob("*") if p.is_file())
            shutil.rmtree(folder, ignore_errors=True)
        if removed:
            log.info("session %s ended: removed %d file(s)", key[:12], removed)
        return removed

    def sessions(self) -> list[str]:
        with self._lock:
            return sorted(set(self._files) | set(self._outputs))

    def cleanup_all(self) -> int:
        return sum(self.cleanup(s) for s in self.sessions())


def _remove(path: Path) -> int:
    """Remove a file and its folder when that becomes empty (Gradio keeps one folder per file)."""
    try:
        path.unlink()
    except FileNotFoundError:
        return 0
    except OSError as err:
        log.warning("could not remove %s: %s", path, err)
        return 0
    try:
        path.parent.rmdir()
    except OSError:
        pass
    return 1


# --------------------------------------------------------------------------------------------------------------
# preview
# --------------------------------------------------------------------------------------------------------------
def overlay_kps(image: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """The photo crop with its V-Kps drawing laid over it (drawn pixels replace the photo's)."""
    from vexpress.kps.draw import draw_kps_image

    h, w = image.shape[:2]
    drawing = draw_kps_image(h, w, kps)
    mask = drawing.any(axis=-1, keepdims=True)
    return np.where(mask, drawing, image).astype(np.uint8)


def preview_frames(num_frames: int, kps: np.ndarray, most: int = 4) -> list[int]:
    """Up to ``most`` evenly spread frame indices; one when the keypoints never move (still head)."""
    if num_frames <= 1 or np.allclose(kps, kps[:1]):
        return [0]
    idx = np.unique(np.linspace(0, num_frames - 1, most).round().astype(int))
    return [int(i) for i in idx]


def preview_images(inputs: Any, most: int = 4) -> list[tuple[np.ndarray, str]]:
    """What the model sees: the face crop, the crop with its keypoints, and the V-Kps images of a few frames."""
    from vexpress.kps.draw import draw_kps_image

    crop = np.asarray(inputs.reference.image)
    h, w = crop.shape[:2]
    kps = np.asarray(inputs.kps)
    items = [(crop, f"reference crop {w}x{h}"),
             (overlay_kps(crop, inputs.reference.kps), "photo keypoints (eyes, nose)")]
    frames = preview_frames(len(kps), kps, most)
    for i in frames:
        label = "V-Kps, every frame" if len(frames) == 1 else f"V-Kps, frame {i + 1}/{len(kps)}"
        items.append((draw_kps_image(h, w, kps[i]), label))
    return items


def describe_inputs(inputs: Any, scenario: str) -> str:
    """Markdown lines: duration -> frames, size, scenario and strategy, and the preparation notes."""
    lines = [f"**{inputs.duration:.2f} s** of speech -> **{inputs.num_frames} frames** at {inputs.fps:g} fps, "
             f"{inputs.width}x{inputs.height}; scenario: {scenario} (`{inputs.retarget}`)"]
    lines += [f"- {note}" for note in inputs.notes]
    return "\n".join(lines)


def describe_result(info: Mapping[str, Any]) -> str:
    total = float(info.get("seconds", {}).get("total", 0.0))
    n = int(info.get("num_frames", 0))
    return (f"**{n} frames** at {float(info.get('fps', 0)):g} fps ({float(info.get('duration_s', 0)):.2f} s), "
            f"{info.get('sampler')} {info.get('steps')} steps, seed {info.get('seed')}: {total:.1f} s "
            f"({n / max(total, 1e-9):.2f} frames/s)")


# --------------------------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------------------------
class Engine:
    """One loaded pipeline serving the page: prepares inputs (cached per session) and generates one video at a time.

    Args:
        cfg: the app config (``conf/app.yaml``: output size, fps, crop, windows, crf, ...).
        pipe: a :class:`~vexpress.pipelines.VExpressPipeline` (built like ``vexpress-generate`` builds it).
        files: where session files are recorded and videos written.
    """

    def __init__(self, cfg: Any, pipe: Any, files: SessionFiles):
        self.cfg = cfg
        self.pipe = pipe
        self.files = files
        self._device_lock = threading.Lock()  # the page also queues generations one at a time
        self._prepared: dict[str, tuple[tuple, Any]] = {}
        self._prep_lock = threading.Lock()

    @property
    def size(self) -> tuple[int, int]:
        return int(self.cfg.height), int(self.cfg.width)

    def _cache_key(self, request: Request) -> tuple:
        def stamp(path: str | None):
            if not path:
                return None
            try:
                st = os.stat(path)
            except OSError:
                return (path, None)
            return (path, st.st_size, st.st_mtime_ns)

        driving = request.driving if request.retarget != "fix_face" else None
        return (stamp(request.photo), stamp(request.speech), stamp(driving), request.retarget)

    def prepare(self, request: Request, session: str | None = None) -> Any:
        """Check and read the inputs (face crop, audio, driving keypoints); no network. The result for the same
        files and scenario is reused within a session (preview, then generate)."""
        request.check()
        key = self._cache_key(request)
        sid = SessionFiles._key(session)
        with self._prep_lock:
            hit = self._prepared.get(sid)
        if hit is not None and hit[0] == key:
            return hit[1]
        from vexpress.pipelines.vexpress_pipeline import prepare_inputs

        height, width = self.size
        driving = request.driving if request.retarget != "fix_face" else None
        kwargs = dict(driving=driving, retarget=request.retarget, height=height, width=width,
                      fps=float(self.cfg.fps), crop=str(self.cfg.get("crop", "auto")),
                      crop_scale=float(self.cfg.get("crop_scale", 1.9)), face_analyzer=self.pipe.face_analyzer)
        with _driving_tolerance(self.cfg.get("driving_max_missing")):
            inputs = prepare_inputs(str(request.photo), str(request.speech), **kwargs)
        with self._prep_lock:
            self._prepared[sid] = (key, inputs)
        return inputs

    def forget(self, session: str | None) -> None:
        with self._prep_lock:
            self._prepared.pop(SessionFiles._key(session), None)

    def generate(self, inputs: Any, settings: Settings, session: str | None = None) -> tuple[Path, dict[str, Any]]:
        """Generate one video (one at a time on this engine's device); returns its path and the run's details."""
        settings.check()
        options = settings.options(self.cfg)
        self.pipe.check_inputs(height=inputs.height, width=inputs.width, fps=inputs.fps,
                               **{k: options[k] for k in ("num_inference_steps", "context_frames",
                                                          "context_overlap", "decode_chunk_size")})
        out = self.files.output_path(session)
        with self._device_lock:
            result = self.pipe.generate(inputs, output_path=out, **options)
        if not out.is_file():
            raise RuntimeError(f"the pipeline did not write {out}")
        self.files.track(session, out)
        log.info("session %s: %s", SessionFiles._key(session)[:12], describe_result(result.info))
        return out, dict(result.info)

    def end_session(self, session: str | None) -> int:
        """Forget the session's prepared inputs and delete its files."""
        self.forget(session)
        return self.files.cleanup(session)


def _driving_tolerance(value: Any):
    """``vexpress.pipelines.inputs.driving_tolerance(value)`` when both exist (the truncated-driving-video check)."""
    if value is None:
        return contextlib.nullcontext()
    from vexpress.pipelines import inputs as inputs_module

    tolerance = getattr(inputs_module, "driving_tolerance", None)
    return tolerance(value) if tolerance is not None else contextlib.nullcontext()
