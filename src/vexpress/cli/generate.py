"""``vexpress-generate``: a talking-portrait video from one photo and a voice.

    vexpress-generate weights=EXPORT reference_image=me.jpg audio=speech.mp3 output=me.mp4
    vexpress-generate weights=EXPORT reference_image=a.jpg audio=b.wav driving=b.mp4 output=a.mp4
    vexpress-generate weights=V_EXPRESS vae=sd-vae-ft-mse audio_encoder.path=wav2vec2-base-960h ...
    vexpress-generate --help

Order of work: the output path is checked, then every input is read and checked (photo + face, audio, driving
input) before the weights are loaded, so a bad input fails in seconds with a one-line error and exit code 2; the
video is written atomically, so a failure never leaves a partial file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vexpress.cli._common import config_path, user_errors
from vexpress.errors import InputError, WeightsError

log = logging.getLogger("vexpress.generate")

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def build_pipeline(cfg) -> Any:
    """The pipeline named by ``cfg.weights``: ``tiny``, an export folder, or the official files."""
    from hydra.utils import instantiate

    from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

    scheduler = instantiate(cfg.sampler) if cfg.get("sampler") is not None else "ddim"
    weights = str(cfg.weights)
    device, dtype = str(cfg.device), str(cfg.dtype)
    if weights == "tiny":
        log.warning("weights=tiny: a randomly initialised tiny model (smoke test); the video is noise")
        return VExpressPipeline.tiny(sampler=scheduler, device=device, dtype=dtype)
    path = Path(weights).expanduser()
    if not path.exists():
        raise WeightsError(f"weights not found: {path} (give a training export folder, the folder with the official "
                           "V-Express files, or weights=tiny for a smoke test)")
    from vexpress.models.weights import EXPORT_MANIFEST

    vae = str(Path(str(cfg.vae)).expanduser()) if cfg.vae else None
    encoder = {k: v for k, v in (_plain(cfg.audio_encoder) or {}).items() if v is not None} or None
    if encoder is not None and "name" not in encoder:
        encoder["name"] = "wav2vec2"  # only a path was given
    if (path / EXPORT_MANIFEST).is_file():
        return VExpressPipeline.from_export(path, vae=vae, audio_encoder=encoder, sampler=scheduler, device=device,
                                            dtype=dtype)
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
    return VExpressPipeline.from_official(path, vae=vae, audio_encoder=encoder, sampler=scheduler, device=device,
                                          dtype=dtype)


@user_errors
def run(cfg) -> Path:
    from vexpress.pipelines.schedulers import DEFAULT_STEPS
    from vexpress.pipelines.vexpress_pipeline import check_options, prepare_inputs
    from vexpress.utils.io import check_writable, write_json

    output = check_writable(str(cfg.output), "output video")
    if output.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"output {output} must end with .mp4 (or .m4v/.mov): the video is an H.264 + AAC MP4")
    if cfg.info_json:
        check_writable(str(cfg.info_json), "info_json")
    sampler_name = str(cfg.sampler.name) if cfg.get("sampler") is not None else "ddim"
    steps = cfg.num_inference_steps if cfg.num_inference_steps is not None else DEFAULT_STEPS.get(sampler_name, 25)
    options = dict(num_inference_steps=steps, guidance_scale=float(cfg.guidance_scale),
                   audio_guidance_scale=None if cfg.audio_guidance_scale is None else float(cfg.audio_guidance_scale),
                   reference_attention_weight=float(cfg.reference_attention_weight),
                   audio_attention_weight=float(cfg.audio_attention_weight), context_frames=int(cfg.context_frames),
                   context_overlap=int(cfg.context_overlap), seed=int(cfg.seed), median_filter=bool(cfg.median_filter),
                   decode_chunk_size=int(cfg.decode_chunk_size), progress=bool(cfg.progress))
    check_options(height=int(cfg.height), width=int(cfg.width), fps=float(cfg.fps), retarget=cfg.retarget,
                  **{k: options[k] for k in ("num_inference_steps", "context_frames", "context_overlap",
                                             "reference_attention_weight", "audio_attention_weight",
                                             "decode_chunk_size")})
    inputs = prepare_inputs(str(cfg.reference_image), str(cfg.audio),
                            driving=str(cfg.driving) if cfg.driving else None, retarget=cfg.retarget,
                            height=int(cfg.height), width=int(cfg.width), fps=float(cfg.fps), crop=str(cfg.crop),
                            crop_scale=float(cfg.crop_scale))
    for note in inputs.notes:
        log.info(note)
    log.info("%s: %.2f s of audio -> %d frames at %g fps, retarget=%s", cfg.audio, inputs.duration,
             inputs.num_frames, inputs.fps, inputs.retarget)
    pipe = build_pipeline(cfg)
    pipe.check_inputs(height=inputs.height, width=inputs.width, fps=inputs.fps,
                      **{k: options[k] for k in ("num_inference_steps", "context_frames", "context_overlap",
                                                 "decode_chunk_size")})
    result = pipe.generate(inputs, output_path=output, crf=int(cfg.crf), **options)
    info = result.info
    total = info["seconds"]["total"]
    print(f"wrote {output}: {info['num_frames']} frames at {info['fps']:g} fps ({info['duration_s']:.2f} s), "
          f"{info['num_frames'] / max(total, 1e-9):.2f} frames/s, {total:.1f} s in all")
    if cfg.info_json:
        write_json(str(cfg.info_json), {**info, "output": str(output)})
    return output


def main() -> None:
    import hydra

    hydra.main(config_path=config_path(), config_name="generate", version_base="1.3")(run)()


if __name__ == "__main__":
    main()
