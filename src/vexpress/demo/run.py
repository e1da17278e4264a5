"""``make demo``: the embedded default end to end on a CPU (orchestration behind ``vexpress-demo``).

Phases (each timed, with progress bars), everything cached so a re-run only redoes what changed:

1. ``data``: the synthetic talking-face benchmark (``vexpress.synthetic``, cached by config hash);
2. ``vae``: the embedded foundation's tiny ``AutoencoderKL`` (``conf/demo.yaml`` ``foundation``);
3. ``latents``: a latent cache of every clip (``vexpress.data.cache``), so training reads tensors;
4. ``train_evaluate``: jobs in ``workers`` processes, each started as soon as its inputs are ready
   (:mod:`vexpress.demo.workers`):

   - ``train/<run>``: the demo experiments (``conf/experiment/demo_*.yaml``) through the same curriculum loop as
     ``vexpress-train``; a stage whose effective config equals an already trained one (the image and audio+motion
     stages of the recipe and of the progressive ablation) is trained once and reused;
   - ``evaluate/<label>``: every run (and the earlier stages of the runs in ``eval.stages_of``) generates the
     held-out clips with their own audio and with another clip's audio, measured against the synthetic ground
     truth (:mod:`vexpress.demo.evaluate`);
   - ``probe/<run>``: condition influence of every stage export on a fixed held-out batch;
5. ``vae_floor``: the VAE reconstruction of the same clips, the floor a latent model can reach;
6. ``sample_video``: ground truth | recipe, side by side, with the audio;
7. ``report``: ``report.md``, ``report.json``, ``report.png`` (:mod:`vexpress.demo.report`).

Nothing here tunes the evaluation: the protocol is fixed in ``conf/demo.yaml`` and identical for every run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from omegaconf import OmegaConf

from vexpress.data.records import load_manifest
from vexpress.demo.evaluate import evaluate_export, evaluate_vae_floor, evaluation_labels, sample_video
from vexpress.demo.phases import Phases
from vexpress.demo.prepare import ensure_data, ensure_latents, evaluation_data, foundation_vae
from vexpress.demo.report import ROLES, goals, paired_table, scored_protocol, write_plot, write_report
from vexpress.demo.workers import Job, run_jobs
from vexpress.errors import InputError
from vexpress.evaluation.synthetic import shuffled_audio_sources
from vexpress.training.runner import CurriculumRunner
from vexpress.utils.io import write_json

log = logging.getLogger("vexpress.demo")

#: What the report keeps of each stage record of the runner.
TRAIN_RECORD_KEYS = ("stage", "index", "global_step", "skipped", "stage_key", "stage_dir", "probe", "metrics")


# ---------------------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------------------
def run_roles(runs: Mapping[str, Any]) -> dict[str, str]:
    """run name -> role of ``conf/demo.yaml``'s ``runs`` (each ``{experiment: ..., role: recipe | ablation}``);
    exactly one run is the recipe. A mistake is a one-line :class:`InputError` before any work."""
    roles: dict[str, str] = {}
    for run, spec in runs.items():
        if not isinstance(spec, Mapping) or not spec.get("experiment") or spec.get("role") not in ROLES:
            raise InputError(f"runs.{run} must be {{experiment: <conf/experiment option>, role: recipe | ablation}}, "
                             f"got {OmegaConf.to_container(spec) if OmegaConf.is_config(spec) else spec!r}")
        extra = spec.get("overrides")
        if extra is not None and (isinstance(extra, (str, Mapping)) or not all(isinstance(o, str) for o in extra)):
            raise InputError(f"runs.{run}.overrides must be a list of vexpress-train overrides (KEY=VALUE), "
                             f"got {extra!r}")
        own_eval = spec.get("eval")
        if own_eval is not None and not isinstance(own_eval, Mapping):
            raise InputError(f"runs.{run}.eval must be a mapping of evaluation settings that replace the demo's "
                             f"`eval` for this run (e.g. {{audio_attention_weight: 1.5}}), got {own_eval!r}")
        roles[str(run)] = str(spec["role"])
    recipes = [run for run, role in roles.items() if role == "recipe"]
    if len(recipes) != 1:
        raise InputError(f"exactly one demo run needs role recipe, found {len(recipes)} ({', '.join(recipes) or 'none'}"
                         f"); set runs.<name>.role=recipe on one run and ablation on the others")
    return roles


def run_own_overrides(spec: Mapping[str, Any]) -> list[str]:
    """A demo run's own ``vexpress-train`` overrides (``runs.<name>.overrides``; none when absent)."""
    return [str(o) for o in spec.get("overrides") or []]


def run_own_eval(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A demo run's own evaluation settings (``runs.<name>.eval``; none when absent): they replace the demo's
    ``eval`` for that run only, so each arm of a comparison can be sampled as suits it (e.g. its own audio
    attention weight, chosen on the exploration clips). The clips and the scoring stay common."""
    own = spec.get("eval")
    if own is None:
        return {}
    return dict(OmegaConf.to_container(own, resolve=True) if OmegaConf.is_config(own) else own)


def run_eval(cfg: Any, run: str) -> Any:
    """The evaluation settings of one demo run: ``eval`` with ``runs.<run>.eval`` merged on top, resolved (job
    processes have no Hydra context). Refuses an own setting that changes what is scored (clips, frames, the
    shuffled-audio pairing): every run must be scored on the same material."""
    own = run_own_eval(cfg.runs[run])
    common = {"clips", "first_clip", "heldout_data", "frames", "shuffle_seed", "frame_stride", "fit_pose"} & set(own)
    if common:
        raise InputError(f"runs.{run}.eval sets {', '.join(sorted(common))}: these fix what every run is scored on; "
                         "set them in `eval`, for all runs")
    unknown = set(own) - set(cfg.eval)
    if unknown:
        raise InputError(f"runs.{run}.eval has unknown settings {', '.join(sorted(unknown))}; the demo's `eval` "
                         f"has: {', '.join(sorted(cfg.eval))}")
    merged = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(cfg.eval, resolve=True)), own)
    return OmegaConf.create(OmegaConf.to_container(merged, resolve=True))


def train_overrides(cfg: Any, run: str, extra: Sequence[str] = ()) -> list[str]:
    """``vexpress-train`` overrides of one demo run: its experiment, the demo's folders, the demo's
    ``train_overrides`` (every run), then the run's own ``runs.<name>.overrides`` (this run only)."""
    out = Path(cfg.output_dir)
    return [f"experiment={cfg.runs[run].experiment}", f"paths.output_dir={out / 'runs' / run}",
            f"paths.root_dir={cfg.paths.root_dir}", f"paths.cache_dir={cfg.paths.cache_dir}",
            f"paths.foundation_dir={cfg.foundation}", *list(cfg.get("train_overrides") or []),
            *run_own_overrides(cfg.runs[run]), *extra]


def compose_train(overrides: Sequence[str]):
    from hydra import compose

    return compose(config_name="train", overrides=list(overrides))


def training_lanes(runs: Mapping[str, Sequence[str] | CurriculumRunner]) -> list[list[str]]:
    """The runs (run -> its overrides or its curriculum runner) grouped into lanes: runs whose first stage has the
    same stage key share a lane, in the order given, and each trains after the one before it in its lane, reusing
    its identical stages. Lanes train side by side."""
    lanes: dict[str, list[str]] = {}
    for run, r in runs.items():
        runner = r if isinstance(r, CurriculumRunner) else CurriculumRunner(compose_train(r), list(r))
        lanes.setdefault(runner.stage_config(0).stage_key, []).append(run)
    return list(lanes.values())


def train_log(out: Path, run: str) -> Path:
    """Where the training job of a demo run writes its console output (when jobs run in processes)."""
    return out / "runs" / f"train_{run}.log"


def train_run(conf_dir: str | None, run: str, overrides: Sequence[str], shared: Mapping[str, Path] | None
              ) -> tuple[list[dict], float, dict[str, Path] | None]:
    """Train one demo run with the curriculum loop of ``vexpress-train``: (stage records, seconds, stage key ->
    finished stage folder). With ``shared`` (the map of the run before it in its lane) a stage whose key is there
    is copied, not trained again. ``conf_dir``: compose the config there (a worker process has no Hydra context)."""
    import contextlib

    from hydra import initialize_config_dir

    t = time.perf_counter()
    known = None if shared is None else dict(shared)
    ctx = contextlib.nullcontext() if conf_dir is None else initialize_config_dir(config_dir=conf_dir,
                                                                                  version_base=None)
    with ctx:
        stages = CurriculumRunner(compose_train(overrides), list(overrides)).run(shared=known)
    records = [{k: v for k, v in r.items() if k not in ("trainer", "model")} for r in stages]
    return records, time.perf_counter() - t, known


def timed_evaluation(*args: Any) -> tuple[dict[str, Any], float]:
    """:func:`~vexpress.demo.evaluate.evaluate_export` and its seconds."""
    t = time.perf_counter()
    return evaluate_export(*args), time.perf_counter() - t


def probe_batch(data_cfg: Any, latent_dir: Path, clips: int, frames: int) -> dict:
    """A fixed held-out batch (posterior means, no flip) for the influence probe."""
    from hydra.utils import instantiate

    dm = instantiate(data_cfg, num_frames=frames, batch_size=clips, latent_cache=str(latent_dir),
                     sample_latents=False, num_workers=0, persistent_workers=False)
    dm.setup("validate")
    ds = dm.val_dataset if dm.val_dataset is not None else dm.train_dataset
    return torch.utils.data.default_collate([ds[i] for i in range(min(clips, len(ds)))])


def probe_run(data_cfg: Mapping[str, Any], scheduler_cfg: Mapping[str, Any], probe_cfg: Mapping[str, Any],
              latent_dir: Path, stages: Sequence[Mapping[str, Any]]) -> tuple[list[dict], float]:
    """Condition influence of each stage export of one run on the fixed held-out batch (rows, seconds)."""
    from hydra.utils import instantiate

    from vexpress.models.weights import load_export
    from vexpress.training.noise import DiffusionTargets
    from vexpress.training.probe import influence_on_batch

    t = time.perf_counter()
    pcfg = OmegaConf.create(dict(probe_cfg))
    batch = probe_batch(OmegaConf.create(dict(data_cfg)), latent_dir, int(pcfg.clips), int(pcfg.frames))
    targets = DiffusionTargets(instantiate(OmegaConf.create(dict(scheduler_cfg))))
    rows = []
    for r in stages:
        net = load_export(r["export"], load_vae=False).net
        vals = influence_on_batch(net, targets, batch["target_latents"], ref_latents=batch["reference_latents"],
                                  audio_windows=batch["audio_windows"], kps_images=batch["kps_images"],
                                  lip_masks=batch["lip_masks"], timesteps=list(pcfg.timesteps), seed=int(pcfg.seed))
        rows.append({"stage": r["stage"], "index": r["index"], **vals})
    return rows, time.perf_counter() - t


def demo_jobs(cfg: Any, tcfg: Any, latent_dir: Path, records: Sequence[Any], shuffled: Mapping[str, Any],
              vae: str | Path | None, here: bool) -> list[Job]:
    """The demo's work as :class:`~vexpress.demo.workers.Job` s, in priority order: every run's training (a run after
    the one before it in its lane), then every evaluation (each after its run's training; the first one also scores
    the ground truth), then the influence probe of every run's stages. ``here``: the jobs run in this process (no
    config folder to compose in, no log files)."""
    from vexpress.utils.paths import CONF_DIR

    out = Path(cfg.output_dir)
    overrides = {run: train_overrides(cfg, run, [f"data.latent_cache={latent_dir}"]) for run in cfg.runs}
    share = bool(cfg.get("share_identical_stages", True))
    runners = {run: CurriculumRunner(compose_train(ov), ov) for run, ov in overrides.items()}
    stage_names = {run: list(r.curriculum.stages) for run, r in runners.items()}
    lanes = training_lanes(runners) if share else [[run] for run in overrides]
    before = {run: lane[i - 1] if i else None for lane in lanes for i, run in enumerate(lane)}
    conf_dir = None if here else str(CONF_DIR)

    def train_args(run: str):
        prev = before[run]
        return lambda done: (conf_dir, run, list(overrides[run]), done[f"train/{prev}"][2] if prev else
                             ({} if share else None))

    jobs = [Job(f"train/{run}", train_run, train_args(run), after=(f"train/{before[run]}",) if before[run] else (),
                log=None if here else train_log(out, run)) for run in overrides]
    stages_of = set(cfg.eval.get("stages_of") or [])
    first = True
    for run in overrides:
        for label, index in evaluation_labels(run, stage_names[run], run in stages_of):
            folder = out / "eval" / label.replace("/", "_")

            def eval_args(run=run, label=label, index=index, folder=folder, gt=first, ecfg=run_eval(cfg, run)):
                return lambda done: (Path(done[f"train/{run}"][0][index]["export"]), label, list(records),
                                     dict(shuffled), ecfg, folder, gt, vae)

            jobs.append(Job(f"evaluate/{label}", timed_evaluation, eval_args(), after=(f"train/{run}",),
                            log=None if here else folder.with_name(f"{folder.name}.log")))
            first = False
    data_cfg = OmegaConf.to_container(tcfg.data, resolve=True)
    scheduler_cfg = OmegaConf.to_container(tcfg.noise_scheduler, resolve=True)
    probe_cfg = OmegaConf.to_container(cfg.probe, resolve=True)
    for run in overrides:
        def probe_args(run=run):
            return lambda done: (data_cfg, scheduler_cfg, probe_cfg, latent_dir, done[f"train/{run}"][0])

        jobs.append(Job(f"probe/{run}", probe_run, probe_args(), after=(f"train/{run}",),
                        log=None if here else out / "runs" / f"probe_{run}.log"))
    return jobs


def train_and_evaluate(cfg: Any, tcfg: Any, latent_dir: Path, records: Sequence[Any], shuffled: Mapping[str, Any],
                       vae: str | Path | None, phases: Phases) -> tuple[dict[str, list], dict[str, list], dict]:
    """Run :func:`demo_jobs` in ``workers`` processes at once (each with its share of ``threads``; 1: in turn, in
    this process): (run -> stage records, run -> probe rows, label -> evaluation). Each job's seconds go to
    ``phases.seconds`` under its name (``train/<run>``, ``evaluate/<label>``, ``probe/<run>``)."""
    workers = max(1, int(cfg.get("workers") or 1))
    threads = max(1, int(cfg.get("threads") or torch.get_num_threads()) // workers)
    here = workers <= 1
    jobs = demo_jobs(cfg, tcfg, latent_dir, records, shuffled, vae, here)
    if not here:
        log.info("%d jobs (training, evaluation, probe) in %d processes (%d torch thread%s each), each as soon as "
                 "its inputs are ready; their output: %s and %s", len(jobs), workers, threads,
                 "" if threads == 1 else "s", Path(cfg.output_dir) / "runs" / "*.log",
                 Path(cfg.output_dir) / "eval" / "*.log")

    def done(job: Job, result: Any) -> None:
        phases.seconds[job.name] = result[1]
        log.info("%s finished in %.0f s (demo at %.0f s)", job.name, result[1], phases.total)

    out = run_jobs(jobs, workers, threads, on_done=done)
    results = {run: out[f"train/{run}"][0] for run in cfg.runs}
    probes = {run: out[f"probe/{run}"][0] for run in cfg.runs}
    evals = {job.name.split("/", 1)[1]: out[job.name][0] for job in jobs if job.name.startswith("evaluate/")}
    return results, probes, evals


# ---------------------------------------------------------------------------------------------------------------
def run_demo(cfg: Any) -> dict[str, Any]:
    """Every phase of the demo (module docstring) for ``conf/demo.yaml``; returns the report (also written to
    ``<output_dir>/report.{json,md,png}``)."""
    roles = run_roles(cfg.runs)
    torch.set_num_threads(max(1, int(cfg.get("threads") or torch.get_num_threads())))
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    phases = Phases()
    first_run = next(iter(cfg.runs))
    tcfg = compose_train(train_overrides(cfg, first_run))

    with phases("data"):
        root = ensure_data(tcfg.data)
        train_records = load_manifest(root, split=tcfg.data.train_split)
        held = load_manifest(root, split=tcfg.data.val_split)
        all_records = load_manifest(root)
        eval_root = evaluation_data(tcfg.data, cfg.eval.get("heldout_data"))
        eval_held = held if eval_root == root else load_manifest(eval_root, split=tcfg.data.val_split)
    with phases("vae"):
        vae, vae_info = foundation_vae(cfg.foundation)
    with phases("latents"):
        cache = ensure_latents(cfg, root, all_records, vae, vae_info, int(tcfg.data.image_size), str(tcfg.data.crop))
    with phases("train_evaluate"):
        first = int(cfg.eval.get("first_clip", 0)) % max(1, len(eval_held))
        records = (eval_held[first:] + eval_held[:first])[: int(cfg.eval.clips)]
        if len(records) < int(cfg.eval.clips):
            log.warning("eval.clips=%d but the held-out split has %d clips: evaluating %d", int(cfg.eval.clips),
                        len(eval_held), len(records))
        shuffled = shuffled_audio_sources(records, seed=int(cfg.eval.shuffle_seed))
        # one VAE decodes every run and the floor: the foundation's (an export's copy is what it was trained with,
        # which a decoder fine-tune of the foundation improves without changing the latents)
        results, probes, evals = train_and_evaluate(cfg, tcfg, cache.path, records, shuffled, vae_info["dir"],
                                                    phases)
    with phases("vae_floor"):
        vae_floor = evaluate_vae_floor(vae, records, cfg.eval)
    video = None
    if cfg.sample_video.get("enabled", True):
        with phases("sample_video"):
            video = sample_video(cfg, results, held, out, vae_info["dir"],
                                 {run: run_eval(cfg, run) for run in cfg.sample_video.runs})
    g = goals(evals, roles, vae_floor)
    report = {
        "format": "vexpress-demo-report", "version": 1, "train_seed": int(tcfg.seed),
        "seconds": {**phases.seconds, "total": phases.total},
        "data": {"root": str(root), "train_clips": len(train_records), "heldout_clips": len(held),
                 "eval_root": str(eval_root), "eval_heldout_clips": len(eval_held)},
        "vae": {k: v for k, v in vae_info.items() if k != "key"},
        "train": {run: [{k: v for k, v in r.items() if k in TRAIN_RECORD_KEYS} for r in rs]
                  for run, rs in results.items()},
        "probe": probes, "evaluation": evals, "goals": g, "paired": paired_table(evals, roles), "vae_floor": vae_floor,
        "protocol": scored_protocol(OmegaConf.to_container(cfg.eval, resolve=True), evals),
        "experiments": {run: str(spec.experiment) for run, spec in cfg.runs.items()},
        "run_overrides": {run: run_own_overrides(spec) for run, spec in cfg.runs.items()},
        "run_eval": {run: run_own_eval(spec) for run, spec in cfg.runs.items()},
        "roles": roles,
        "sample_video": str(video) if video else None,
        "sample_video_runs": list(cfg.sample_video.runs),
    }
    with phases("report"):
        write_plot(out / "report.png", evals, probes, vae_floor)
        write_report(out, {**report, "seconds": {**phases.seconds, "total": phases.total}})
    report["seconds"] = {**phases.seconds, "total": phases.total}
    write_json(out / "report.json", report)
    return report
