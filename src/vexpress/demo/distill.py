"""Issue 11's few-step study on a finished ``make demo``: the distilled student against its teacher.

``python -m vexpress.demo.distill --demo-output demo_output`` (``experiments/distill/run.sh``):

1. ``train``: ``stage=distill`` (``conf/stage/distill.yaml``, docs/training.md "Distillation stage") from the demo
   recipe's final export (the teacher), through the same curriculum loop as ``vexpress-train``, on the demo's latent
   cache (training identities only) at a CPU budget (``--steps``, ``--lr``, ``--frames``, ``--batch``). Its folder is
   ``<out>/student``; a rerun with the same settings reuses the finished student.
2. ``evaluate``: the teacher with the demo's sampler settings but ``--teacher-steps`` (25) DDIM steps with guidance
   (3.5, the official inference's: two branches), and the student with ``sampler=lcm`` and guidance 1 (one
   branch) at each of ``--student-steps`` (1 2 4 8), on the held-out clips of the demo's report (its ``protocol``:
   the same clips, frames, audio pairs and seeds), scored against the synthetic ground truth by
   :func:`vexpress.demo.evaluate.evaluate_export`. The wall time of generating the clips (every call of
   :func:`~vexpress.demo.evaluate.generate_clip`: conditions, denoising, decoding; not the scoring) and the denoiser
   passes per frame are metered, all in one process on one machine, after one untimed warm-up clip.
3. ``report``: ``<out>/report.{json,md}``: one row per sampler (errors, shuffled / correct ratio, wall seconds,
   frames/s, UNet passes per frame), each student's ratios to the teacher, paired student-minus-teacher differences
   over clips, and the issue's done-means checked for the 4-step student: each error (mouth with the correct audio,
   identity, pose) at most 1.1x the teacher's, the shuffled / correct ratio at least 0.9x the teacher's, generation
   at least 8x faster. The mouth error with shuffled audio is the control of the ratio, not an error to minimise:
   its ratio to the teacher is reported, not checked.

The demo's config is recomposed from ``conf/demo.yaml`` with the overrides given after the options (the ones the
demo ran with: ``paths.cache_dir``, ``foundation``, ``train_overrides``, ...), so the data, latent cache and
training settings are the demo's; the evaluation settings come from the report's ``protocol`` (the config fills in
anything it lacks), and the evaluated clips are checked against the report's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from omegaconf import OmegaConf

from vexpress.errors import InputError, VExpressError

log = logging.getLogger("vexpress.demo.distill")

#: The issue's measurement and its done-means.
STUDENT_STEPS = (1, 2, 4, 8)
TEACHER_STEPS = 25
#: the teacher samples as the official inference does (two branches), whatever the demo's own evaluation uses
TEACHER_GUIDANCE = 3.5
DONE_STUDENT_STEPS = 4
MAX_ERROR_FACTOR = 1.1
MIN_RATIO_FACTOR = 0.9
MIN_SPEEDUP = 8.0
#: the errors checked against the teacher (lower is better); the shuffled-audio mouth error is the ratio's control
CHECKED_ERRORS = ("mouth_err_correct", "identity_err", "pose_err")
METRICS = ("mouth_err_correct", "mouth_err_shuffled", "ratio", "identity_err", "pose_err")
#: what a report row keeps of an :func:`~vexpress.demo.evaluate.evaluate_export` result
EVAL_KEYS = (*METRICS, "mouth_corr", "mouth_corr_shuffled", "clips", "frames", "per_clip")
#: evaluation settings that differ per report row (the protocol holds the shared ones)
PER_ROW_SETTINGS = ("sampler", "num_inference_steps", "guidance_scale", "audio_guidance_scale")
TEACHER = "teacher"
REPORT_JSON, REPORT_MD = "report.json", "report.md"


# ---------------------------------------------------------------------------------------------------------------
# the demo it works on
# ---------------------------------------------------------------------------------------------------------------
def compose_demo(demo_output: Path, overrides: Sequence[str]):
    """``conf/demo.yaml`` with the demo's overrides and ``output_dir=demo_output`` (inside Hydra's config search
    path). ``paths.root_dir`` defaults to what the demo's command line gets: ``$VEXPRESS_ROOT``, else the working
    folder."""
    from hydra import compose

    root = os.environ.get("VEXPRESS_ROOT") or os.getcwd()
    return compose(config_name="demo", overrides=[f"paths.root_dir={root}", *overrides, f"output_dir={demo_output}"])


def read_demo_report(demo_output: Path) -> dict[str, Any]:
    path = demo_output / REPORT_JSON
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"--demo-output {demo_output} holds no readable {REPORT_JSON} ({err}); give the output "
                         f"folder of a finished make demo / vexpress-demo run") from err
    if not isinstance(report, dict) or not isinstance(report.get("protocol"), dict):
        raise InputError(f"{path} is not a vexpress-demo report (no protocol); give a finished demo's output folder")
    return report


def run_export(demo_output: Path, report: Mapping[str, Any], run: str) -> Path:
    """The final stage export of ``run`` in the demo at ``demo_output`` (from its report; not checked for DONE)."""
    from vexpress.training.curriculum import EXPORT_DIR, STAGES_DIR

    stages = (report.get("train") or {}).get(run or "") or []
    if not run or not stages or not stages[-1].get("stage_dir"):
        raise InputError(f"the demo report in {demo_output} names no trained run {run!r}; run make demo first")
    return Path(demo_output) / "runs" / run / STAGES_DIR / Path(str(stages[-1]["stage_dir"])).name / EXPORT_DIR


def teacher_export(demo_output: Path, report: Mapping[str, Any], given: Path | None = None) -> tuple[str, Path]:
    """(recipe run, its final stage export) of the demo, or ``given`` as the teacher; the export must be finished
    (``DONE`` marker)."""
    from vexpress.demo.report import recipe_run
    from vexpress.training.curriculum import read_done_marker

    run = recipe_run(report.get("roles") or {})
    if not run:
        raise InputError(f"the demo report in {demo_output} names no recipe run; run make demo first")
    export = run_export(demo_output, report, run)
    if given is not None:
        export = Path(given).resolve()
    if not read_done_marker(export):
        raise InputError(f"the teacher export {export} is missing or unfinished (no DONE marker); rerun the demo, or "
                         f"give a finished export with --teacher")
    return run, export


def eval_settings(demo_eval: Any, protocol: Mapping[str, Any]) -> Any:
    """The demo's evaluation settings as its report recorded them (``protocol``: ``clips_requested`` /
    ``frames_requested`` are the configured ``clips`` / ``frames``); ``conf/demo.yaml`` fills in the rest."""
    recorded = {k: v for k, v in protocol.items() if k in demo_eval and k not in ("clips", "frames")}
    for key in ("clips", "frames"):
        if protocol.get(f"{key}_requested") is not None:
            recorded[key] = protocol[f"{key}_requested"]
    configured = OmegaConf.to_container(demo_eval, resolve=True)
    differs = sorted(k for k, v in recorded.items() if configured.get(k) != v)
    if differs:
        log.info("evaluation settings from the demo report (the composed conf/demo.yaml differs in %s)",
                 ", ".join(differs))
    return OmegaConf.merge(demo_eval, recorded)


def check_demo_data(data_cfg: Any, report: Mapping[str, Any]) -> None:
    """The composed data config is the one the demo's report used (its synthetic set's content key), checked before
    anything is generated."""
    from vexpress.synthetic import SynthConfig

    key = SynthConfig.from_dict(OmegaConf.to_container(data_cfg.synthetic, resolve=True)).key()
    recorded = Path(str((report.get("data") or {}).get("root") or "")).name
    if recorded and recorded != key:
        raise InputError(f"the composed data config (synthetic set {key}) is not the demo's ({recorded}); give the "
                         f"overrides the demo ran with (train_overrides=[...], paths.cache_dir=...) as KEY=VALUE "
                         f"arguments")


def heldout_records(held: Sequence[Any], ecfg: Any, protocol: Mapping[str, Any]) -> list[Any]:
    """The demo's evaluation clips (``eval.clips`` held-out clips from ``eval.first_clip``, as ``make demo`` picks
    them), checked against the clip ids its report scored."""
    first = int(ecfg.get("first_clip", 0)) % max(1, len(held))
    records = (list(held[first:]) + list(held[:first]))[: int(ecfg.clips)]
    expected = sorted(protocol.get("clip_ids") or [])
    if expected and sorted(r.id for r in records) != expected:
        raise InputError(f"the held-out clips ({len(records)}) are not the {len(expected)} the demo report scored; "
                         f"give the overrides the demo ran with (paths.cache_dir, train_overrides, ...) as "
                         f"KEY=VALUE arguments")
    return records


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------
def student_overrides(cfg: Any, run: str, latent_dir: Path, teacher: Path, out: Path, args: Any) -> list[str]:
    """``vexpress-train`` overrides of the student: the demo run's (experiment, data, folders) + ``stage=distill``
    from the teacher's export at the CPU budget of ``args``."""
    from vexpress.demo.run import train_overrides

    steps = int(args.steps)
    return train_overrides(cfg, run, [
        f"data.latent_cache={latent_dir}", "curriculum=single", "stage=distill", f"stage.init_from={teacher}",
        f"paths.output_dir={out / 'student'}", f"stage.max_steps={steps}", f"trainer.max_steps={steps}",
        f"stage.lr={args.lr}", f"stage.num_frames={int(args.frames)}", f"stage.batch_size={int(args.batch)}",
        # the tiny model on a CPU: memory is no concern, recomputation would only cost time
        "stage.gradient_checkpointing=false",
        # the distillation samples the teacher's ODE with plain Gaussian noise (conf/stage/distill.yaml), not the
        # demo experiment's offset noise; its target is the teacher's guided ODE at the scale the teacher is
        # evaluated with
        "model.noise_offset=0.0", f"model.guidance_scale={float(args.teacher_guidance)}",
        *list(args.train_override or []),
    ])


def train_student(overrides: Sequence[str]) -> dict[str, Any]:
    """Train (or reuse) the student; returns its stage record (export, steps, loss curve)."""
    from hydra.utils import instantiate

    from vexpress.demo.foundation import loss_curve
    from vexpress.demo.run import compose_train
    from vexpress.training.runner import CurriculumRunner

    tcfg = compose_train(overrides)
    t = time.perf_counter()
    record = CurriculumRunner(tcfg, overrides).run()[-1]
    seconds = time.perf_counter() - t
    curriculum = instantiate(tcfg.curriculum, _convert_="all")
    curve = loss_curve(Path(tcfg.paths.output_dir) / "csv" / curriculum.stage_id(0) / "metrics.csv")
    return {
        "export": str(record["export"]), "skipped": bool(record.get("skipped", False)),
        "global_step": record.get("global_step"), "stage_key": record.get("stage_key"), "seconds": seconds,
        "stage": {k: OmegaConf.to_container(tcfg.stage, resolve=True)[k]
                  for k in ("max_steps", "lr", "num_frames", "batch_size", "trainable")},
        "model": {k: tcfg.model[k] for k in ("guidance_scale", "solver_skip", "ema_decay", "loss_type",
                                             "noise_offset", "lip_loss_weight")},
        "seed": int(tcfg.seed), "loss_first": curve[0]["loss"] if curve else None,
        "loss_last": curve[-1]["loss"] if curve else None, "loss_curve": curve,
    }


# ---------------------------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def metered_generation() -> Iterator[dict[str, float]]:
    """Meter every :func:`vexpress.demo.evaluate.generate_clip` call made inside the block (by
    :func:`~vexpress.demo.evaluate.evaluate_export`): wall seconds of the generation, frames generated, and the
    denoiser's calls, seconds and frame passes (batch rows x frames of each call: the guidance branches are rows)."""
    from vexpress.demo import evaluate

    meter = {"seconds": 0.0, "frames": 0, "clips": 0, "unet_calls": 0, "unet_seconds": 0.0, "unet_frame_passes": 0}
    original = evaluate.generate_clip

    def metered(pipe: Any, record: Any, audio_record: Any, num_frames: int, ecfg: Any):
        unet = pipe.net.denoising_unet
        started: list[float] = []

        def before(module: Any, args: tuple) -> None:
            started.append(time.perf_counter())

        def after(module: Any, args: tuple, output: Any) -> None:
            meter["unet_seconds"] += time.perf_counter() - started.pop()
            meter["unet_calls"] += 1
            meter["unet_frame_passes"] += int(args[0].shape[0]) * int(args[0].shape[2])

        hooks = [unet.register_forward_pre_hook(before), unet.register_forward_hook(after)]
        t = time.perf_counter()
        try:
            frames = original(pipe, record, audio_record, num_frames, ecfg)
        finally:
            meter["seconds"] += time.perf_counter() - t
            for h in hooks:
                h.remove()
        meter["clips"] += 1
        meter["frames"] += int(frames.shape[0])
        return frames

    evaluate.generate_clip = metered
    try:
        yield meter
    finally:
        evaluate.generate_clip = original


def sampler_settings(ecfg: Any, sampler: str, steps: int, guidance: float) -> Any:
    """The demo's evaluation settings with another sampler, step count and guidance (no separate audio scale)."""
    return OmegaConf.merge(ecfg, {"sampler": sampler, "num_inference_steps": int(steps),
                                  "guidance_scale": float(guidance), "audio_guidance_scale": None})


def warm_up(export: Path, record: Any, ecfg: Any) -> None:
    """One untimed clip, so no timed evaluation pays the process's first-call costs."""
    from vexpress.demo.evaluate import export_pipeline, generate_clip

    generate_clip(export_pipeline(export, ecfg), record, record, min(2, int(ecfg.frames)), ecfg)


def evaluate_sampler(label: str, role: str, export: Path, ecfg: Any, records: Sequence[Any],
                     shuffled: Mapping[str, Any], out: Path, include_gt: bool) -> dict[str, Any]:
    """One report row: :func:`~vexpress.demo.evaluate.evaluate_export` with metered generation."""
    from vexpress.demo.evaluate import evaluate_export
    from vexpress.pipelines.guidance import Guidance

    branches = Guidance(float(ecfg.guidance_scale), ecfg.audio_guidance_scale).branches
    t = time.perf_counter()
    with metered_generation() as meter:
        res = evaluate_export(export, label, records, shuffled, ecfg, out / "eval" / label, include_gt=include_gt)
    row: dict[str, Any] = {
        "label": label, "role": role, "export": str(export), "sampler": str(ecfg.sampler),
        "steps": int(ecfg.num_inference_steps), "guidance_scale": float(ecfg.guidance_scale),
        "branches": list(branches), "unet_passes_per_frame": int(ecfg.num_inference_steps) * len(branches),
        "unet_passes_per_frame_measured": meter["unet_frame_passes"] / max(1, meter["frames"]),
        "generate_seconds": meter["seconds"], "unet_seconds": meter["unet_seconds"],
        "frames_generated": meter["frames"], "clips_generated": meter["clips"],
        "frames_per_second": meter["frames"] / meter["seconds"] if meter["seconds"] > 0 else None,
        "evaluate_seconds": time.perf_counter() - t,
    }
    row.update({k: res.get(k) for k in EVAL_KEYS})
    if include_gt:
        row["ground_truth"] = res.get("ground_truth")
    log.info("%s: %.1f s for %d frames (%.2f frames/s), mouth err %s, ratio %s", label, row["generate_seconds"],
             row["frames_generated"], row["frames_per_second"] or float("nan"), row["mouth_err_correct"], row["ratio"])
    return row


# ---------------------------------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------------------------------
def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _over(a: Any, b: Any) -> float | None:
    return float(a) / float(b) if _finite(a) and _finite(b) and b != 0 else None


def vs_teacher(row: Mapping[str, Any], teacher: Mapping[str, Any]) -> dict[str, Any]:
    """A student row's figures over the teacher's (metrics), the teacher's times over the student's (speed-ups),
    and the paired student-minus-teacher differences over clips."""
    from vexpress.demo.report import paired_differences

    out: dict[str, Any] = {m: _over(row.get(m), teacher.get(m)) for m in METRICS}
    out["speedup"] = _over(teacher.get("generate_seconds"), row.get("generate_seconds"))
    out["unet_speedup"] = _over(teacher.get("unet_seconds"), row.get("unet_seconds"))
    out["unet_passes_ratio"] = _over(teacher.get("unet_passes_per_frame"), row.get("unet_passes_per_frame"))
    out["paired"] = paired_differences(row, teacher)
    return out


def done_means(rows: Mapping[str, Mapping[str, Any]], label: str | None) -> dict[str, Any]:
    """Issue 11's done-means for the student row ``label`` (the 4-step one) against the teacher."""
    if label is None or label not in rows:
        return {"student": label, "evaluated": False, "all_met": None,
                "note": f"no {DONE_STUDENT_STEPS}-step student was evaluated (--student-steps)"}
    rel = rows[label]["vs_teacher"]
    checks: dict[str, Any] = {}
    for m in CHECKED_ERRORS:
        checks[m] = {"value": rel.get(m), "limit": MAX_ERROR_FACTOR, "rule": f"<= {MAX_ERROR_FACTOR:g} x teacher"}
    checks["ratio"] = {"value": rel.get("ratio"), "limit": MIN_RATIO_FACTOR,
                       "rule": f">= {MIN_RATIO_FACTOR:g} x teacher"}
    checks["speedup"] = {"value": rel.get("speedup"), "limit": MIN_SPEEDUP,
                         "rule": f">= {MIN_SPEEDUP:g}x faster (generation wall time)"}
    for name, c in checks.items():
        v = c["value"]
        c["met"] = bool(_finite(v) and (v >= c["limit"] if name in ("ratio", "speedup") else v <= c["limit"]))
    return {"student": label, "evaluated": True, "checks": checks, "all_met": all(c["met"] for c in checks.values())}


# ---------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------
def write_distill_report(out: Path, report: Mapping[str, Any]) -> None:
    from vexpress.demo.report import PAIRED_METRICS, _f, _protocol_sentence
    from vexpress.utils.io import atomic_open, write_json

    write_json(out / REPORT_JSON, report)
    rows, tr, done = report["rows"], report["training"], report["done"]
    teacher = rows[TEACHER]
    lines = [
        "# Few-step student against its teacher (issue 11)", "",
        f"Demo `{report['demo_output']}`: teacher = the recipe's final export, student = `stage=distill` from it "
        f"({tr['stage']['max_steps']} steps, lr {tr['stage']['lr']:g}, {tr['stage']['batch_size']} clips x "
        f"{tr['stage']['num_frames']} frames{', reused' if tr['skipped'] else ''}). Held-out identities only: "
        f"{_protocol_sentence(report)}, the demo report's clips, audio pairs and seeds. Wall times: generation of "
        f"every clip (correct + shuffled audio) in one process (torch threads: {report['threads']}), after one "
        f"untimed warm-up clip; scoring not included.", "",
        "## Held-out evaluation", "",
        "| sampler | steps | branches | UNet passes / frame | mouth err (correct) | mouth err (shuffled) | "
        "shuffled / correct | identity err | pose err (px) | generate s | frames/s | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in rows.items():
        speed = r.get("vs_teacher", {}).get("speedup") if label != TEACHER else 1.0
        lines.append(
            f"| {label} ({r['sampler']}, guidance {r['guidance_scale']:g}) | {r['steps']} | {len(r['branches'])} | "
            f"{r['unet_passes_per_frame']} | {_f(r['mouth_err_correct'])} | {_f(r['mouth_err_shuffled'])} | "
            f"{_f(r['ratio'], 2)} | {_f(r['identity_err'])} | {_f(r['pose_err'], 2)} | {_f(r['generate_seconds'], 1)} "
            f"| {_f(r['frames_per_second'], 2)} | {_f(speed, 1)}x |")
    gt, vf = teacher.get("ground_truth") or {}, report.get("vae_floor") or {}
    if vf:
        lines.append(f"| VAE reconstruction of the ground truth (latent-model floor) | | | | {_f(vf.get('mouth_err'))} "
                     f"| | | {_f(vf.get('identity_err'))} | {_f(vf.get('pose_err'), 2)} | | | |")
    if gt:
        lines.append(f"| ground-truth video (measurement floor) | | | | {_f(gt.get('mouth_err'))} | | | "
                     f"{_f(gt.get('identity_err'))} | {_f(gt.get('pose_err'), 2)} | | | |")
    lines += ["", "## Students over the teacher", "",
              "Errors and ratio: student / teacher; speed-ups: teacher seconds / student seconds.", "",
              "| student | mouth err (correct) | mouth err (shuffled) | shuffled / correct | identity err | pose err | "
              "generation speed-up | denoiser speed-up | UNet passes |", "|---|---|---|---|---|---|---|---|---|"]
    for label, r in rows.items():
        if label == TEACHER:
            continue
        v = r["vs_teacher"]
        lines.append(f"| {label} | " + " | ".join(_f(v.get(m), 2) for m in METRICS)
                     + f" | {_f(v.get('speedup'), 1)}x | {_f(v.get('unet_speedup'), 1)}x | "
                       f"{_f(v.get('unet_passes_ratio'), 1)}x fewer |")
    lines += ["", "## Paired differences, student minus teacher (mean +- standard error over held-out clips)", "",
              "| student | clips | " + " | ".join(PAIRED_METRICS) + " |", "|---|---|" + "---|" * len(PAIRED_METRICS)]
    for label, r in rows.items():
        if label == TEACHER:
            continue
        d = r["vs_teacher"]["paired"]
        n = max((x["n"] for x in d.values()), default=0)
        lines.append(f"| {label} | {n} | " + " | ".join(
            f"{_f(d[m]['mean'])} +- {_f(d[m]['se'])}" if m in d else "n/a" for m in PAIRED_METRICS) + " |")
    lines += ["", f"## Done means (issue 11): the {DONE_STUDENT_STEPS}-step student", ""]
    if done.get("evaluated"):
        lines += ["| check | student / teacher | limit | met |", "|---|---|---|---|"]
        for name, c in done["checks"].items():
            lines.append(f"| {name} | {_f(c['value'], 3)} | {c['rule']} | {c['met']} |")
        lines.append(f"\nAll met: **{done['all_met']}**. The mouth error with shuffled audio is the control of the "
                     "ratio (higher = the mouth follows the audio): reported above, not checked.")
    else:
        lines.append(done.get("note", "not evaluated"))
    lines += ["", "## Student training", "",
              f"- teacher: `{report['teacher_export']}`", f"- student: `{tr['export']}`",
              f"- {tr['global_step'] if tr['global_step'] is not None else 'reused'} steps in {tr['seconds']:.0f} s; "
              f"loss {_f(tr.get('loss_first'), 4)} -> {_f(tr.get('loss_last'), 4)}; distillation guidance "
              f"{tr['model']['guidance_scale']:g}, solver skip {tr['model']['solver_skip']}, seed {tr['seed']}",
              f"- command: `{report['command']}`; commit `{report['commit']}`", "",
              "## Wall time per phase", "", "| phase | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report["seconds"].items()]
    lines += ["", "Files: `report.json` (every figure, per-clip errors), `eval/<row>/` (per-clip tables), "
              "`student/stages/0_distill/export` (the student in the official layout).", ""]
    with atomic_open(out / REPORT_MD, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))


# ---------------------------------------------------------------------------------------------------------------
def run_study(args: Any, out: Path) -> dict[str, Any]:
    """Train the student, evaluate teacher and students, write the report into ``out`` (module docstring)."""
    import torch
    from hydra import initialize_config_dir

    from vexpress.data.records import load_manifest
    from vexpress.demo.foundation import git_commit
    from vexpress.demo.phases import Phases
    from vexpress.demo.prepare import ensure_data, ensure_latents, foundation_vae
    from vexpress.demo.report import scored_protocol
    from vexpress.demo.run import compose_train, train_overrides
    from vexpress.evaluation.synthetic import shuffled_audio_sources
    from vexpress.utils.paths import CONF_DIR

    commit = git_commit()  # the code that runs, before anything can change the checkout
    demo_output = Path(args.demo_output).resolve()
    report_in = read_demo_report(demo_output)
    phases = Phases()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose_demo(demo_output, args.overrides)
        torch.set_num_threads(max(1, int(args.threads or cfg.get("threads") or torch.get_num_threads())))
        run, teacher = teacher_export(demo_output, report_in, args.teacher)
        if run not in cfg.runs:
            raise InputError(f"the demo's recipe run {run!r} is not a run of the composed conf/demo.yaml "
                             f"({', '.join(cfg.runs)}); give the overrides the demo ran with")
        ecfg = eval_settings(cfg.eval, report_in["protocol"])
        if args.teacher_guidance is None:
            args.teacher_guidance = TEACHER_GUIDANCE
        with phases("data"):
            tcfg = compose_train(train_overrides(cfg, next(iter(cfg.runs))))
            check_demo_data(tcfg.data, report_in)
            root = ensure_data(tcfg.data)
            held = load_manifest(root, split=tcfg.data.val_split)
            records = heldout_records(held, ecfg, report_in["protocol"])
            shuffled = shuffled_audio_sources(records, seed=int(ecfg.shuffle_seed))
            vae, vae_info = foundation_vae(cfg.foundation)
            cache = ensure_latents(cfg, root, load_manifest(root), vae, vae_info, int(tcfg.data.image_size),
                                   str(tcfg.data.crop))
            del vae
        with phases("train"):
            training = train_student(student_overrides(cfg, run, cache.path, teacher, out, args))
        student = Path(training["export"])
        teacher_cfg = sampler_settings(ecfg, "ddim", args.teacher_steps, args.teacher_guidance)
        settings = [(TEACHER, TEACHER, teacher, teacher_cfg)]
        settings += [(f"student_{s}", "student", student, sampler_settings(ecfg, "lcm", s, 1.0))
                     for s in args.student_steps]
        rows: dict[str, dict[str, Any]] = {}
        with phases("evaluate"):
            warm_up(student, records[0], settings[1][3])
            for i, (label, role, export, scfg) in enumerate(settings):
                rows[label] = evaluate_sampler(label, role, export, scfg, records, shuffled, out, include_gt=i == 0)
    for label, row in rows.items():
        if label != TEACHER:
            row["vs_teacher"] = vs_teacher(row, rows[TEACHER])
    done_label = f"student_{DONE_STUDENT_STEPS}" if DONE_STUDENT_STEPS in args.student_steps else None
    report = {
        "format": "vexpress-distill-report", "version": 1,
        "command": "python -m vexpress.demo.distill " + " ".join(shlex.quote(a) for a in args.argv),
        "commit": commit, "demo_output": str(demo_output), "recipe_run": run, "teacher_export": str(teacher),
        "threads": torch.get_num_threads(),
        "protocol": {k: v for k, v in scored_protocol(OmegaConf.to_container(ecfg, resolve=True), rows).items()
                     if k not in PER_ROW_SETTINGS},
        "training": training, "rows": rows, "done": done_means(rows, done_label),
        "criteria": {"student_steps": DONE_STUDENT_STEPS, "max_error_factor": MAX_ERROR_FACTOR,
                     "checked_errors": list(CHECKED_ERRORS), "min_ratio_factor": MIN_RATIO_FACTOR,
                     "min_speedup": MIN_SPEEDUP},
        "vae_floor": report_in.get("vae_floor"),
        "data": {"root": str(root), "heldout_clips": len(held), "latent_cache": str(cache.path)},
        "seconds": {**phases.seconds, "total": phases.total},
    }
    write_distill_report(out, report)
    return report


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m vexpress.demo.distill",
        description="Issue 11's few-step study on a finished make demo: distil the recipe's final export into a "
                    "student (stage=distill), then generate the demo report's held-out clips with the teacher (DDIM "
                    "with guidance) and with the student (sampler=lcm, one branch) at several step counts, and "
                    "report errors, wall time and UNet passes per frame against the teacher.",
        epilog="Overrides (KEY=VALUE) are conf/demo.yaml overrides: give the ones the demo ran with (e.g. "
               "paths.cache_dir=..., foundation=..., train_overrides=[...]). Put them before a list option "
               "(--student-steps) or after --.")
    ap.add_argument("overrides", nargs="*", help="conf/demo.yaml overrides the demo ran with")
    ap.add_argument("--demo-output", type=Path, required=True, help="output folder of a finished demo")
    ap.add_argument("--out", type=Path, default=None, help="report folder (default <demo output>/distill)")
    ap.add_argument("--steps", type=_positive_int, default=300, help="distillation steps (default 300)")
    ap.add_argument("--lr", type=float, default=1e-4, help="distillation learning rate (default 1e-4)")
    ap.add_argument("--frames", type=_positive_int, default=4, help="frames per training clip (default 4)")
    ap.add_argument("--batch", type=_positive_int, default=2, help="clips per training batch (default 2)")
    ap.add_argument("--teacher", type=Path, default=None, help="teacher export (default: the recipe's final one)")
    ap.add_argument("--teacher-steps", type=_positive_int, default=TEACHER_STEPS,
                    help=f"teacher DDIM steps (default {TEACHER_STEPS})")
    ap.add_argument("--teacher-guidance", type=float, default=None,
                    help="teacher guidance scale, also distilled into the student (default 3.5, the official one)")
    ap.add_argument("--student-steps", type=_positive_int, nargs="+", default=list(STUDENT_STEPS),
                    help="student LCM step counts (default 1 2 4 8)")
    ap.add_argument("--threads", type=_positive_int, default=None, help="torch threads (default: the demo's)")
    ap.add_argument("--train-override", action="append", default=[], metavar="KEY=VALUE",
                    help="extra vexpress-train override of the student (repeatable), after all others")
    args = ap.parse_intermixed_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.student_steps = sorted(set(args.student_steps))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "offline")
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from vexpress.demo.report import _f
    from vexpress.training import runner  # noqa: F401 - imports Lightning, whose log handlers are tidied next
    from vexpress.utils.io import check_writable_folder, removing_empty_new_folders
    from vexpress.utils.logging import tidy_lightning_logging

    tidy_lightning_logging()
    out = (Path(args.out) if args.out else Path(args.demo_output) / "distill").expanduser().absolute()
    try:
        read_demo_report(Path(args.demo_output))  # a wrong --demo-output fails before any folder is made
        with removing_empty_new_folders(out):
            check_writable_folder(out, "--out")
            report = run_study(args, out)
    except VExpressError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    print(f"[distill] report: {out / REPORT_MD}  (total {report['seconds']['total']:.0f} s)")
    for label, r in report["rows"].items():
        print(f"[distill] {label:>10}: mouth err {_f(r['mouth_err_correct'])} (ratio {_f(r['ratio'], 2)}), identity "
              f"{_f(r['identity_err'])}, pose {_f(r['pose_err'], 2)} px, generation {r['generate_seconds']:.1f} s, "
              f"{r['unet_passes_per_frame']} UNet passes/frame")
    print(f"[distill] done means met: {report['done'].get('all_met')}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
