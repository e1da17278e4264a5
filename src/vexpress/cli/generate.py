"""``vexpress-generate``: a talking-portrait video from one photo and a voice.

    vexpress-generate weights=EXPORT reference_image=me.jpg audio=speech.mp3 output=me.mp4
    vexpress-generate weights=EXPORT reference_image=a.jpg audio=b.wav driving=b.mp4 output=a.mp4
    vexpress-generate weights=V_EXPRESS vae=sd-vae-ft-mse audio_encoder.path=wav2vec2-base-960h ...
    vexpress-generate --help

Order of work: the options are type-checked, the weights folder is checked (what kind, which files it lacks), the
output's temporary file is created in the target folder (so an unwritable destination fails at once), then every
input is read and checked (photo + face, audio, driving input) before the weights are loaded: a bad input fails in
seconds with a one-line error and exit code 2. The video is written atomically: a failure, Ctrl-C or SIGTERM leaves
no file; a run killed with SIGKILL leaves its temporary file, which the next run for the same output removes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vexpress.cli._common import hydra_main, stops_cleanly, user_errors
from vexpress.errors import InputError, WeightsError

log = logging.getLogger("vexpress.generate")

#: Output names the generated H.264 + AAC MP4 may have (MP4-family containers only; inputs: data.video.VIDEO_SUFFIXES).
MP4_SUFFIXES = (".mp4", ".m4v", ".mov")


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


#: Numeric and boolean options: key -> (type, may be null).
OPTION_TYPES: dict[str, tuple[type, bool]] = {
    "height": (int, False), "width": (int, False), "fps": (float, False), "crop_scale": (float, False),
    "num_inference_steps": (int, True), "guidance_scale": (float, False), "audio_guidance_scale": (float, True),
    "reference_attention_weight": (float, False), "audio_attention_weight": (float, False),
    "audio_attention_weight_low_noise": (float, True), "low_noise_timestep": (int, False),
    "context_frames": (int, False), "context_overlap": (int, False), "seed": (int, True),
    "median_filter": (bool, False), "decode_chunk_size": (int, False), "crf": (int, False),
    "progress": (bool, False), "driving_max_missing": (float, False),
}


def typed_options(cfg) -> dict[str, Any]:
    """The numeric and boolean options of ``cfg`` with their types checked (one-line :class:`InputError` naming the
    key and the expected type); values keep their meaning, ranges are checked by ``check_options``."""
    out: dict[str, Any] = {}
    for key, (kind, nullable) in OPTION_TYPES.items():
        value = cfg.get(key)
        if value is None:
            if nullable:
                out[key] = None
                continue
            raise InputError(f"{key} is null; give a {kind.__name__} value ({key}=...)")
        if kind is bool:
            if not isinstance(value, bool):
                raise InputError(f"{key}={value!r} must be true or false")
            out[key] = value
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise InputError(f"{key}={value!r} must be an integer (int), e.g. {key}={_EXAMPLES.get(key, 1)}")
            out[key] = int(value)
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                raise InputError(f"{key}={value!r} must be a finite number (float), e.g. "
                                 f"{key}={_EXAMPLES.get(key, 1.0)}")
            out[key] = float(value)
    if out["guidance_scale"] < 0 or (out["audio_guidance_scale"] is not None and out["audio_guidance_scale"] < 0):
        raise InputError("guidance_scale and audio_guidance_scale must be >= 0 (official 3.5; <= 1: no guidance)")
    if not 0 <= out["crf"] <= 51:
        raise InputError(f"crf={out['crf']} must be in [0, 51] (H.264 quality; 18 is visually lossless)")
    if out["seed"] is not None and out["seed"] < 0:
        raise InputError(f"seed={out['seed']} must be >= 0 (or null for a random seed)")
    from vexpress.pipelines.inputs import check_max_missing

    check_max_missing(out["driving_max_missing"])
    return out


_EXAMPLES = {"height": 512, "width": 512, "fps": 30, "crop_scale": 1.9, "num_inference_steps": 25,
             "guidance_scale": 3.5, "audio_guidance_scale": 3.5, "reference_attention_weight": 0.95,
             "audio_attention_weight": 3.0, "audio_attention_weight_low_noise": 1.0, "low_noise_timestep": 500,
             "context_frames": 24, "context_overlap": 4, "seed": 42,
             "decode_chunk_size": 8, "crf": 18, "driving_max_missing": 0.02}


@dataclass
class WeightsRoute:
    """What ``weights=`` names, resolved and checked before any input is read: ``tiny``, ``export`` or ``official``
    (with the VAE folder and audio encoder the official files need)."""

    kind: str
    path: Path | None = None
    vae: str | None = None
    encoder: dict | None = None


def resolve_weights(cfg) -> WeightsRoute:
    """Check ``weights=`` first (exists? an export? which official files are missing?), then what it needs besides
    (VAE, audio encoder). Cheap: only looks at file names."""
    weights = str(cfg.weights)
    if weights == "tiny":
        return WeightsRoute("tiny")
    from vexpress.models.weights import EXPORT_MANIFEST, OFFICIAL_FILES, WEIGHT_SUFFIXES, find_official_files

    path = Path(weights).expanduser()
    hint = "give a training export folder, the folder with the official V-Express files, or weights=tiny"
    if not path.exists():
        raise WeightsError(f"weights folder {path} does not exist ({hint})")
    if not path.is_dir():
        raise WeightsError(f"weights={path} is a file, not a folder ({hint})")
    vae = str(Path(str(cfg.vae)).expanduser()) if cfg.vae else None
    if vae is not None and not Path(vae).is_dir():
        raise WeightsError(f"vae folder {vae} does not exist; give a local diffusers AutoencoderKL folder "
                           "(sd-vae-ft-mse)")
    encoder = {k: v for k, v in (_plain(cfg.audio_encoder) or {}).items() if v is not None} or None
    if encoder is not None and "name" not in encoder:
        encoder["name"] = "wav2vec2"  # only a path was given
    if encoder is not None and encoder.get("path") and not Path(str(encoder["path"])).expanduser().exists():
        raise WeightsError(f"audio_encoder.path {encoder['path']} does not exist; give the local "
                           "wav2vec2-base-960h folder")
    if (path / EXPORT_MANIFEST).is_file():
        return WeightsRoute("export", path, vae, encoder)
    found = find_official_files(path)
    lacking = [n for n in OFFICIAL_FILES if n not in found]
    if not found:
        raise WeightsError(f"weights folder {path} is neither a vexpress export (no {EXPORT_MANIFEST}) nor a folder "
                           f"of official V-Express files (no {', '.join(OFFICIAL_FILES)}; "
                           f"{'/'.join(WEIGHT_SUFFIXES)}); {hint}")
    if lacking:
        raise WeightsError(f"official weights folder {path} lacks {', '.join(lacking)} "
                           f"(has {', '.join(sorted(found))}); copy the missing files of the release there")
    pretrained = Path(str(cfg.pretrained_dir)).expanduser()
    if vae is None:
        vae = str(pretrained / "sd-vae-ft-mse")
        if not Path(vae).is_dir():
            raise WeightsError(f"official weights in {path} need the sd-vae-ft-mse VAE: set vae=/path/to/sd-vae-ft-mse "
                               f"(not found at {vae})")
    if encoder is None:
        default = pretrained / "wav2vec2-base-960h"
        if not default.is_dir():
            raise WeightsError(f"official weights in {path} need wav2vec2-base-960h: set audio_encoder.path=DIR "
                               f"(not found at {default})")
        encoder = {"name": "wav2vec2", "path": str(default)}
    return WeightsRoute("official", path, vae, encoder)


def build_pipeline(cfg, route: WeightsRoute | None = None) -> Any:
    """The pipeline named by ``cfg.weights``: ``tiny``, an export folder, or the official files."""
    from hydra.utils import instantiate

    from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

    route = route if route is not None else resolve_weights(cfg)
    scheduler = instantiate(cfg.sampler) if cfg.get("sampler") is not None else "ddim"
    device, dtype = str(cfg.device), str(cfg.dtype)
    if route.kind == "tiny":
        log.warning("weights=tiny: a randomly initialised tiny model (smoke test); the video is noise")
        return VExpressPipeline.tiny(sampler=scheduler, device=device, dtype=dtype)
    if route.kind == "export":
        return VExpressPipeline.from_export(route.path, vae=route.vae, audio_encoder=route.encoder,
                                            sampler=scheduler, device=device, dtype=dtype)
    return VExpressPipeline.from_official(route.path, vae=route.vae, audio_encoder=route.encoder, sampler=scheduler,
                                          device=device, dtype=dtype)


def _probe_writable(path: Path, what: str) -> Path:
    """Create and remove a temporary file next to ``path`` (``os.access`` says yes to root even on /proc)."""
    from vexpress.pipelines.video_io import reserve_output

    with reserve_output(path, what) as res:
        return res.path


@user_errors
@stops_cleanly
def run(cfg) -> Path:
    from vexpress.pipelines.inputs import driving_tolerance
    from vexpress.pipelines.schedulers import DEFAULT_STEPS
    from vexpress.pipelines.vexpress_pipeline import CHECKED_OPTIONS, check_options, prepare_inputs
    from vexpress.pipelines.video_io import reserve_output
    from vexpress.utils.io import write_json

    opt = typed_options(cfg)
    output = Path(str(cfg.output)).expanduser()
    if output.is_dir():
        raise InputError(f"output video path {output} is a directory; give a file name (e.g. {output / 'out.mp4'})")
    if output.suffix.lower() not in MP4_SUFFIXES:
        raise InputError(f"output {output} must end with .mp4 (or .m4v/.mov): the video is an H.264 + AAC MP4")
    sampler_name = str(cfg.sampler.name) if cfg.get("sampler") is not None else "ddim"
    steps = opt["num_inference_steps"] if opt["num_inference_steps"] is not None \
        else DEFAULT_STEPS.get(sampler_name, 25)
    options = dict(num_inference_steps=steps, guidance_scale=opt["guidance_scale"],
                   audio_guidance_scale=opt["audio_guidance_scale"],
                   reference_attention_weight=opt["reference_attention_weight"],
                   audio_attention_weight=opt["audio_attention_weight"],
                   audio_attention_weight_low_noise=opt["audio_attention_weight_low_noise"],
                   low_noise_timestep=opt["low_noise_timestep"], context_frames=opt["context_frames"],
                   context_overlap=opt["context_overlap"], seed=opt["seed"], median_filter=opt["median_filter"],
                   decode_chunk_size=opt["decode_chunk_size"], progress=opt["progress"])
    check_options(height=opt["height"], width=opt["width"], fps=opt["fps"], retarget=cfg.retarget,
                  **{k: options[k] for k in CHECKED_OPTIONS})
    route = resolve_weights(cfg)
    info_json = _probe_writable(Path(str(cfg.info_json)).expanduser(), "info_json") if cfg.info_json else None
    with reserve_output(output, "output video") as reservation:
        output = reservation.path
        for stale in reservation.removed_stale:
            log.info("removed %s, left by an earlier run that was killed", stale.name)
        with driving_tolerance(opt["driving_max_missing"]):
            inputs = prepare_inputs(str(cfg.reference_image), str(cfg.audio),
                                    driving=str(cfg.driving) if cfg.driving else None, retarget=cfg.retarget,
                                    height=opt["height"], width=opt["width"], fps=opt["fps"], crop=str(cfg.crop),
                                    crop_scale=opt["crop_scale"])
        for note in inputs.notes:
            log.info(note)
        log.info("%s: %.2f s of audio -> %d frames at %g fps, retarget=%s", cfg.audio, inputs.duration,
                 inputs.num_frames, inputs.fps, inputs.retarget)
        pipe = build_pipeline(cfg, route)
        pipe.check_inputs(height=inputs.height, width=inputs.width, fps=inputs.fps,
                          **{k: options[k] for k in ("num_inference_steps", "context_frames", "context_overlap",
                                                     "decode_chunk_size")})
        result = pipe.generate(inputs, output_path=output, crf=opt["crf"], **options)
        if not output.is_file():
            raise RuntimeError(f"the pipeline did not write {output}")
    info = result.info
    total = info["seconds"]["total"]
    print(f"wrote {output}: {info['num_frames']} frames at {info['fps']:g} fps ({info['duration_s']:.2f} s), "
          f"{info['num_frames'] / max(total, 1e-9):.2f} frames/s, {total:.1f} s in all")
    if info_json is not None:
        write_json(info_json, {**info, "output": str(output)})
    return output


def main() -> None:
    hydra_main("generate", run, "vexpress-generate")  # one-line config errors, --help of its own groups


if __name__ == "__main__":
    main()
