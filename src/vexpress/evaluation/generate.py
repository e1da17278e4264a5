"""Generate the videos of a test manifest with a trained run before evaluating them (resumable).

One function does the wiring to the generation pipeline (:func:`pipeline_generate_fn`), so any other generator
(e.g. a LightningModule's sampler in ``make demo``) can be plugged in as a plain callable
``generate_fn(record, audio_record, out_path)`` that writes ``out_path`` atomically.

Self-reconstruction protocol: reference image = the clip's first frame; audio = the clip's own audio (or another
clip's for the shuffled-audio control); driving keypoints = the clip's keypoints in its own pixels with
``retarget="no_retarget"`` and ``crop="none"`` (the record's frames are already the face crop); output size and fps
= the clip's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from vexpress.errors import InputError

GenerateFn = Callable[[Any, Any, Path], None]


def generate_fn_for_pipeline(pipe: Any, options: Optional[Mapping[str, Any]] = None) -> GenerateFn:
    """A ``generate_fn`` over a ready :class:`vexpress.pipelines.VExpressPipeline` (self-reconstruction protocol).

    The reference keypoints are the record's first-frame keypoints (no face detection on the reference).
    """
    call_options = dict(options or {})

    def generate(record: Any, audio_record: Any, out_path: Path) -> None:
        reference = record.frames([0])[0]
        kps = record.kps.numpy()
        pipe(reference, audio_record.audio.numpy(), kps=kps, reference_kps=kps[0], retarget="no_retarget",
             height=int(record.height), width=int(record.width), fps=float(record.fps), crop="none",
             output_path=out_path, **call_options)

    return generate


def pipeline_generate_fn(run: str | os.PathLike, pipeline: Optional[Mapping[str, Any]] = None,
                         options: Optional[Mapping[str, Any]] = None) -> GenerateFn:
    """A ``generate_fn`` backed by :class:`vexpress.pipelines.VExpressPipeline` (the one place wiring them).

    Args:
        run: a training export folder, the official weights folder (then ``pipeline`` needs ``vae`` and
            ``audio_encoder``), or ``"tiny"`` (a random tiny model: smoke tests only, its videos are noise).
        pipeline: keyword arguments of ``VExpressPipeline.from_weights`` (``vae``, ``audio_encoder``, ``sampler``,
            ``device``, ``dtype``).
        options: sampling options passed to the pipeline call (``num_inference_steps``, ``guidance_scale``,
            ``seed``, ...).
    """
    from vexpress.pipelines import VExpressPipeline

    kwargs = {k: v for k, v in dict(pipeline or {}).items() if v is not None}
    if str(run) == "tiny":
        pipe = VExpressPipeline.tiny(sampler=kwargs.get("sampler", "ddim"), device=kwargs.get("device", "cpu"))
    else:
        path = Path(run).expanduser()
        if not path.exists():
            raise InputError(f"run={run} does not exist; give a training export folder (or run=tiny for a smoke test)")
        pipe = VExpressPipeline.from_weights(path, **kwargs)
    return generate_fn_for_pipeline(pipe, options)


def generate_for_records(
    records: Sequence[Any],
    out_dir: str | os.PathLike,
    generate_fn: GenerateFn,
    audio_sources: Optional[Mapping[str, Any]] = None,
    condition: str = "correct",
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, Path]:
    """Generate ``<out_dir>/<condition>/<clip id>.mp4`` for every record (existing files are kept: resumable).

    Args:
        records: the test clips.
        generate_fn: ``(record, audio_record, out_path) -> None``; must write ``out_path`` atomically.
        audio_sources: clip id -> the record whose audio drives that clip (default: its own).
        condition: folder name / label of the audio condition.

    Returns:
        clip id -> video path.
    """
    folder = Path(out_dir) / condition
    folder.mkdir(parents=True, exist_ok=True)
    out: Dict[str, Path] = {}
    for rec in records:
        path = folder / f"{rec.id}.mp4"
        src = (audio_sources or {}).get(rec.id, rec)
        if not path.is_file():
            generate_fn(rec, src, path)
            if not path.is_file():
                raise InputError(f"the generator wrote no video for clip {rec.id} at {path}")
            if progress is not None:
                progress(f"generated {rec.id} ({condition})")
        out[rec.id] = path
    return out
