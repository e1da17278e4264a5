"""``make demo``: the embedded default end to end on a CPU (orchestration behind ``vexpress-demo``).

Phases (each timed, with progress bars), everything cached so a re-run only redoes what changed:

1. ``data``: the synthetic talking-face benchmark (``vexpress.synthetic``, cached by config hash);
2. ``vae``: the embedded foundation's tiny ``AutoencoderKL`` (``conf/demo.yaml`` ``foundation``);
3. ``latents``: a latent cache of every clip (``vexpress.data.cache``), so training reads tensors;
4. ``train``: the demo experiments (``conf/experiment/demo_*.yaml``) through the same curriculum loop as
   ``vexpress-train``; a stage whose effective config equals an already trained one (the image stage of the recipe
   and of the progressive ablation) is trained once and reused;
5. ``probe``: condition influence of every stage export on a fixed held-out batch;
6. ``evaluate``: every run (and the recipe's earlier stages) generates the held-out clips with their own audio and
   with another clip's audio, measured against the synthetic ground truth (:mod:`vexpress.demo.evaluate`);
7. ``sample_video``: ground truth | recipe, side by side, with the audio;
8. ``report``: ``report.md``, ``report.json``, ``report.png`` (:mod:`vexpress.demo.report`).

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
from vexpress.demo.evaluate import evaluate_export, evaluate_vae_floor, evaluation_targets, sample_video
from vexpress.demo.phases import Phases
from vexpress.demo.prepare import ensure_data, ensure_latents, foundation_vae
from vexpress.demo.report import ROLES, goals, paired_table, scored_protocol, write_plot, write_report
from vexpress.demo.workers import run_in_processes
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
        roles[str(run)] = str(spec["role"])
    recipes = [run for run, role in roles.items() if role == "recipe"]
    if len(recipes) != 1:
        raise InputError(f"exactly one demo run needs role recipe, found {len(recipes)} ({', '.join(recipes) or 'none'}"
                         f"); set runs.<name>.role=recipe on one run and ablation on the others")
    return roles


def run_own_overrides(spec: Mapping[str, Any]) -> list[str]:
    """A demo run's own ``vexpress-train`` overrides (``runs.<name>.overrides``; none when absent)."""
    return [str(o) for o in spec.get("overrides") or []]


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


def train_runs(cfg: Any, latent_dir: Path, phases: Phases) -> dict[str, list[dict]]:
    """Train every demo run with the training loop of ``vexpress-train``; with ``share_identical_stages`` a stage
    whose key equals one already trained (in this demo) is trained once and copied.

    With ``train_workers`` > 1 the runs are trained in that many processes at once (:func:`training_lanes`: runs that
    share their first stage stay in one lane, in order), the torch threads split between them. On a small CPU two
    one-thread processes do more work than one two-thread process: the demo's tiny model runs many small kernels
    that do not keep two threads busy."""
    overrides = {run: train_overrides(cfg, run, [f"data.latent_cache={latent_dir}"]) for run in cfg.runs}
    share = bool(cfg.get("share_identical_stages", True))
    lanes = training_lanes(overrides) if share else [[run] for run in overrides]
    workers = min(int(cfg.get("train_workers") or 1), len(lanes))
    if workers <= 1:
        lane_results = [_train_in_order([(run, overrides[run]) for run in cfg.runs], share)]
    else:
        lane_results = _train_in_processes(cfg, lanes, overrides, workers, share)
    results: dict[str, list[dict]] = {}
    for per_run in lane_results:
        for run, (records, seconds) in per_run.items():
            results[run] = records
            phases.seconds[f"train/{run}"] = seconds
    return {run: results[run] for run in overrides}


def training_lanes(overrides: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """The runs grouped into lanes that can train at the same time: runs whose first stage has the same stage key
    (so the later ones reuse it) share a lane, in the order given."""
    lanes: dict[str, list[str]] = {}
    for run, ov in overrides.items():
        key = CurriculumRunner(compose_train(ov), ov).stage_config(0).stage_key
        lanes.setdefault(key, []).append(run)
    return list(lanes.values())


def lane_log(out: Path, lane: Sequence[str]) -> Path:
    """Where a training process of the demo writes its console output."""
    return out / "runs" / f"train_{'+'.join(lane)}.log"


def _train_in_processes(cfg: Any, lanes: Sequence[Sequence[str]], overrides: Mapping[str, Sequence[str]],
                        workers: int, share: bool) -> list[dict[str, tuple[list[dict], float]]]:
    from vexpress.utils.paths import CONF_DIR

    out = Path(cfg.output_dir)
    threads = max(1, int(cfg.get("threads") or torch.get_num_threads()) // workers)
    logs = [lane_log(out, lane) for lane in lanes]
    log.info("training %d runs in %d processes (%d torch thread%s each): %s; their output: %s", len(overrides),
             workers, threads, "" if threads == 1 else "s", " | ".join(", ".join(lane) for lane in lanes),
             ", ".join(str(p) for p in logs))
    jobs = [(str(CONF_DIR), [(run, list(overrides[run])) for run in lane], share) for lane in lanes]
    return run_in_processes(train_lane, jobs, logs, workers, threads,
                            [f"training {', '.join(lane)}" for lane in lanes])


def train_lane(conf_dir: str, lane: Sequence[tuple[str, Sequence[str]]], share: bool
               ) -> dict[str, tuple[list[dict], float]]:
    """One training process of :func:`train_runs`: the lane's runs in order (run -> (stage records, seconds))."""
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=conf_dir, version_base=None):
        return _train_in_order(lane, share)


def _train_in_order(lane: Sequence[tuple[str, Sequence[str]]], share: bool) -> dict[str, tuple[list[dict], float]]:
    """Train (run, overrides) pairs in turn in this process (run -> (stage records, seconds)); with ``share`` a stage
    whose key equals one trained earlier in the lane is copied, not trained again."""
    out: dict[str, tuple[list[dict], float]] = {}
    shared: dict[str, Path] | None = {} if share else None
    for run, ov in lane:
        t = time.perf_counter()
        stages = CurriculumRunner(compose_train(ov), ov).run(shared=shared)
        out[run] = ([{k: v for k, v in r.items() if k not in ("trainer", "model")} for r in stages],
                    time.perf_counter() - t)
    return out


def evaluate_targets(cfg: Any, targets: Sequence[tuple[str, Path]], records: Sequence[Any],
                     shuffled: Mapping[str, Any], phases: Phases, vae: str | Path | None = None) -> dict[str, Any]:
    """:func:`~vexpress.demo.evaluate.evaluate_export` for every (label, export), decoded with ``vae`` (a folder;
    default: each export's copy), in ``eval.workers`` processes at once (each with its share of ``threads``; console
    output in ``<output_dir>/eval/<label>.log``)."""
    out = Path(cfg.output_dir)
    dirs = [out / "eval" / label.replace("/", "_") for label, _ in targets]
    workers = min(int(cfg.eval.get("workers") or 1), len(targets))
    if workers <= 1:
        evals = {}
        for i, (label, export) in enumerate(targets):
            t = time.perf_counter()
            evals[label] = evaluate_export(export, label, records, shuffled, cfg.eval, dirs[i], include_gt=i == 0,
                                           vae=vae)
            phases.seconds[f"evaluate/{label}"] = time.perf_counter() - t
        return evals
    threads = max(1, int(cfg.get("threads") or torch.get_num_threads()) // workers)
    logs = [d.with_name(f"{d.name}.log") for d in dirs]
    log.info("evaluating %d exports in %d processes (%d torch thread%s each); their output: %s/*.log",
             len(targets), workers, threads, "" if threads == 1 else "s", out / "eval")
    ecfg = OmegaConf.create(OmegaConf.to_container(cfg.eval, resolve=True))  # workers have no Hydra context
    jobs = [(Path(export), label, list(records), dict(shuffled), ecfg, dirs[i], i == 0, vae)
            for i, (label, export) in enumerate(targets)]
    results = run_in_processes(_timed_evaluation, jobs, logs, workers, threads,
                               [f"evaluating {label}" for label, _ in targets])
    evals = {}
    for (label, _), (result, seconds) in zip(targets, results):
        evals[label] = result
        phases.seconds[f"evaluate/{label}"] = seconds
    return evals


def _timed_evaluation(*args: Any) -> tuple[dict[str, Any], float]:
    t = time.perf_counter()
    return evaluate_export(*args), time.perf_counter() - t


def probe_batch(tcfg: Any, latent_dir: Path, clips: int, frames: int) -> dict:
    """A fixed held-out batch (posterior means, no flip) for the influence probe."""
    from hydra.utils import instantiate

    dm = instantiate(tcfg.data, num_frames=frames, batch_size=clips, latent_cache=str(latent_dir),
                     sample_latents=False, num_workers=0, persistent_workers=False)
    dm.setup("validate")
    ds = dm.val_dataset if dm.val_dataset is not None else dm.train_dataset
    return torch.utils.data.default_collate([ds[i] for i in range(min(clips, len(ds)))])


def probe_exports(cfg: Any, tcfg: Any, latent_dir: Path, results: Mapping[str, list]) -> dict[str, list[dict]]:
    from hydra.utils import instantiate

    from vexpress.models.weights import load_export
    from vexpress.training.noise import DiffusionTargets
    from vexpress.training.probe import influence_on_batch

    batch = probe_batch(tcfg, latent_dir, int(cfg.probe.clips), int(cfg.probe.frames))
    targets = DiffusionTargets(instantiate(tcfg.noise_scheduler))
    out: dict[str, list[dict]] = {}
    for run, stages in results.items():
        rows = []
        for r in stages:
            net = load_export(r["export"], load_vae=False).net
            vals = influence_on_batch(net, targets, batch["target_latents"], ref_latents=batch["reference_latents"],
                                      audio_windows=batch["audio_windows"], kps_images=batch["kps_images"],
                                      lip_masks=batch["lip_masks"], timesteps=list(cfg.probe.timesteps),
                                      seed=int(cfg.probe.seed))
            rows.append({"stage": r["stage"], "index": r["index"], **vals})
        out[run] = rows
    return out


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
    with phases("vae"):
        vae, vae_info = foundation_vae(cfg.foundation)
    with phases("latents"):
        cache = ensure_latents(cfg, root, all_records, vae, vae_info, int(tcfg.data.image_size), str(tcfg.data.crop))
    with phases("train"):
        results = train_runs(cfg, cache.path, phases)
    with phases("probe"):
        probes = probe_exports(cfg, tcfg, cache.path, results)
    evals: dict[str, Any] = {}
    with phases("evaluate"):
        first = int(cfg.eval.get("first_clip", 0)) % max(1, len(held))
        records = (held[first:] + held[:first])[: int(cfg.eval.clips)]
        if len(records) < int(cfg.eval.clips):
            log.warning("eval.clips=%d but the held-out split has %d clips: evaluating %d", int(cfg.eval.clips),
                        len(held), len(records))
        shuffled = shuffled_audio_sources(records, seed=int(cfg.eval.shuffle_seed))
        # one VAE decodes every run and the floor: the foundation's (an export's copy is what it was trained with,
        # which a decoder fine-tune of the foundation improves without changing the latents)
        evals = evaluate_targets(cfg, evaluation_targets(cfg, results), records, shuffled, phases, vae_info["dir"])
        vae_floor = evaluate_vae_floor(vae, records, cfg.eval)
    video = None
    if cfg.sample_video.get("enabled", True):
        with phases("sample_video"):
            video = sample_video(cfg, results, held, out, vae_info["dir"])
    g = goals(evals, roles, vae_floor)
    report = {
        "format": "vexpress-demo-report", "version": 1, "train_seed": int(tcfg.seed),
        "seconds": {**phases.seconds, "total": phases.total},
        "data": {"root": str(root), "train_clips": len(train_records), "heldout_clips": len(held)},
        "vae": {k: v for k, v in vae_info.items() if k != "key"},
        "train": {run: [{k: v for k, v in r.items() if k in TRAIN_RECORD_KEYS} for r in rs]
                  for run, rs in results.items()},
        "probe": probes, "evaluation": evals, "goals": g, "paired": paired_table(evals, roles), "vae_floor": vae_floor,
        "protocol": scored_protocol(OmegaConf.to_container(cfg.eval, resolve=True), evals),
        "experiments": {run: str(spec.experiment) for run, spec in cfg.runs.items()},
        "run_overrides": {run: run_own_overrides(spec) for run, spec in cfg.runs.items()},
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
