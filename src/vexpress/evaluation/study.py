"""A multi-seed study of the demo: recipe minus each ablation, clip by clip, with two-way bootstrap intervals.

One ``make demo`` run is one training seed; which of the recipe and its ablations wins changes from seed to seed at
the demo's scale. A study runs the demo with several training seeds (at least :data:`MIN_SEEDS`) on the same held-out
clips and settles each claim with a paired comparison over seeds AND clips::

    python -m vexpress.evaluation.study OUT/seed_*/report.json --out OUT/study [--resamples 10000] [--seed 0]

writes ``study.json`` and ``study.md``. For every ablation and metric (:data:`DIRECTIONS`) the paired differences
``d[seed, clip] = recipe - ablation`` (the same clip, same audio, same training seed) are averaged, and a 95 %
interval comes from a crossed (two-way) bootstrap: seeds and clips are resampled with replacement independently of
each other and the statistic is the mean over the resampled seed x clip grid, so the interval covers both the
seed-to-seed and the clip-to-clip variation. The verdict is "better" / "worse" when the whole interval lies on that
side of 0 (by the metric's direction), else "no difference". Per run: the mean of each metric with its
across-seed standard deviation, the shuffled/correct mouth ratio per seed, and the goals of issue 10 against the VAE
reconstruction floor (:data:`GOAL_IDENTITY_OVER_FLOOR` ...).

Python API::

    from vexpress.evaluation.study import load_reports, analyze, write_study
    data = load_reports(["s7/report.json", "s8/report.json", ...])
    study = analyze(data, resamples=10000, seed=0)
    write_study("out/study", study)          # study.json, study.md (atomically)

Pure numpy + stdlib (no torch): it runs anywhere the report files are.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from vexpress.errors import InputError, VExpressError

# ---------------------------------------------------------------------------------------------------------------
# what is compared, and which way is better (the one table every verdict reads)
# ---------------------------------------------------------------------------------------------------------------
#: per-clip fields of ``report["evaluation"][run]["per_clip"][clip]`` that the study reads
CLIP_FIELDS = ("mouth_err_correct", "mouth_err_shuffled", "identity_err", "pose_err")

#: metric -> which value is better for the recipe's claim. mouth_err_shuffled is HIGHER-is-better: a mouth that
#: follows the audio must be wrong when the clip is driven by another clip's audio; audio_gap = shuffled - correct.
DIRECTIONS: Dict[str, str] = {
    "mouth_err_correct": "lower",
    "mouth_err_shuffled": "higher",
    "audio_gap": "higher",
    "identity_err": "lower",
    "pose_err": "lower",
}
METRICS: Tuple[str, ...] = tuple(DIRECTIONS)

LABELS = {"mouth_err_correct": "mouth err (correct audio)", "mouth_err_shuffled": "mouth err (shuffled audio)",
          "audio_gap": "audio gap (shuffled - correct)", "identity_err": "identity err", "pose_err": "pose err (px)"}

VERDICT_BETTER, VERDICT_WORSE, VERDICT_NONE = "better", "worse", "no difference"

# ---------------------------------------------------------------------------------------------------------------
# goals of issue 10, checked against the VAE reconstruction floor (report["vae_floor"]): a latent model cannot score
# below what the VAE's own reconstruction of the ground truth scores, so the goals are stated relative to it.
# ---------------------------------------------------------------------------------------------------------------
GOAL_IDENTITY_OVER_FLOOR = 1.3  # identity_err <= 1.3 x the VAE floor's identity_err
GOAL_MOUTH_OVER_FLOOR = 2.0  # mouth_err_correct <= 2 x the VAE floor's mouth_err
GOAL_RATIO_MIN = 2.0  # mouth_err_shuffled / mouth_err_correct >= 2: the mouth follows the audio
GOAL_POSE_MAX_PX = 1.5  # pose_err <= 1.5 px (absolute, not relative to the floor)

MIN_SEEDS = 5  # a study's protocol: at least this many training seeds (the CLI's --min-seeds default)
DEFAULT_RESAMPLES = 10000
DEFAULT_SEED = 0
CONFIDENCE = 0.95

STUDY_JSON, STUDY_MD = "study.json", "study.md"


# ---------------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class StudyData:
    """Several demo reports, checked and aligned: ``values[run][metric]`` is an array [seed, clip] (rows in the
    order of ``seeds``, columns in the order of ``clips``), ``audio_gap`` included."""

    paths: List[str]
    seeds: List[int]
    clips: List[str]
    roles: Dict[str, str]
    values: Dict[str, Dict[str, np.ndarray]]
    vae_floors: List[Optional[Dict[str, float]]] = field(default_factory=list)

    @property
    def recipe(self) -> str:
        return next(r for r, role in self.roles.items() if role == "recipe")

    @property
    def ablations(self) -> List[str]:
        return [r for r, role in self.roles.items() if role == "ablation"]


def effective_roles(report: Mapping[str, Any], name: str = "report") -> Dict[str, str]:
    """``report["roles"]`` when present, else "recipe" for the run named ``recipe`` and "ablation" for every other
    evaluated label without "/" (labels with "/" are earlier-stage exports and take no part)."""
    evals = report.get("evaluation")
    if not isinstance(evals, Mapping) or not evals:
        raise InputError(f"{name} has no 'evaluation' runs; give the report.json of a finished vexpress-demo run")
    roles = report.get("roles")
    if roles is None:
        out = {lab: ("recipe" if lab == "recipe" else "ablation") for lab in evals if "/" not in str(lab)}
    else:
        if not isinstance(roles, Mapping):
            raise InputError(f"{name}: 'roles' is not a mapping run -> 'recipe' | 'ablation'")
        out = {}
        for run, role in roles.items():
            if "/" in str(run):
                continue
            if role not in ("recipe", "ablation"):
                raise InputError(f"{name}: run {run!r} has role {role!r}; roles are 'recipe' or 'ablation'")
            if run not in evals:
                raise InputError(f"{name}: run {run!r} has a role but no evaluation; the report is incomplete")
            out[str(run)] = str(role)
    n_recipe = sum(r == "recipe" for r in out.values())
    if n_recipe != 1:
        raise InputError(f"{name} has {n_recipe} recipe runs (runs: {', '.join(out) or 'none'}); a study needs "
                         "exactly one run with the role 'recipe'")
    if not any(r == "ablation" for r in out.values()):
        raise InputError(f"{name} has no ablation run next to the recipe; nothing to compare")
    return out


def _per_clip(report: Mapping[str, Any], run: str, name: str) -> Dict[str, Dict[str, float]]:
    per_clip = (report["evaluation"].get(run) or {}).get("per_clip")
    if not isinstance(per_clip, Mapping) or not per_clip:
        raise InputError(f"{name}: run {run!r} has no per_clip errors; rerun the demo with a version that writes them")
    out: Dict[str, Dict[str, float]] = {}
    for clip, row in per_clip.items():
        vals = {}
        for m in CLIP_FIELDS:
            v = row.get(m) if isinstance(row, Mapping) else None
            try:
                v = float(v)
            except (TypeError, ValueError):
                v = float("nan")
            if not math.isfinite(v):
                raise InputError(f"{name}: run {run!r} clip {clip!r} has no finite {m}; every clip needs all of "
                                 + ", ".join(CLIP_FIELDS))
            vals[m] = v
        out[str(clip)] = vals
    return out


def _vae_floor(report: Mapping[str, Any]) -> Optional[Dict[str, float]]:
    vf = report.get("vae_floor")
    if not isinstance(vf, Mapping):
        return None
    out = {}
    for k in ("mouth_err", "identity_err", "pose_err"):
        try:
            v = float(vf.get(k))
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            out[k] = v
    return out or None


def _read(path: Path) -> Mapping[str, Any]:
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"cannot read demo report {path} ({err.strerror or err}); give report.json files of "
                         "finished vexpress-demo runs") from err
    except ValueError as err:
        raise InputError(f"demo report {path} is not valid JSON ({err}); give report.json files of finished "
                         "vexpress-demo runs") from err
    if not isinstance(obj, Mapping):
        raise InputError(f"demo report {path} is not a JSON object; give report.json files of vexpress-demo runs")
    return obj


def reports_to_data(reports: Sequence[Mapping[str, Any]], names: Optional[Sequence[str]] = None,
                    min_seeds: int = 1) -> StudyData:
    """Check and align parsed reports (``names`` label them in error messages; default ``report[i]``): the same
    runs and roles, the same clip ids in every run, distinct training seeds, at least ``min_seeds`` of them."""
    names = [str(n) for n in names] if names is not None else [f"report[{i}]" for i in range(len(reports))]
    if len(names) != len(reports):
        raise ValueError("names and reports differ in length")
    if len(reports) < max(1, int(min_seeds)):
        raise InputError(f"{len(reports)} demo report(s) given, a study needs at least {max(1, int(min_seeds))} "
                         "(one per training seed)")
    seeds: List[int] = []
    roles0: Optional[Dict[str, str]] = None
    clips0: Optional[List[str]] = None
    rows: Dict[str, Dict[str, List[List[float]]]] = {}
    floors: List[Optional[Dict[str, float]]] = []
    for rep, name in zip(reports, names):
        seed = rep.get("train_seed")
        if isinstance(seed, bool) or not isinstance(seed, (int, float)) or not float(seed).is_integer():
            raise InputError(f"{name} has no integer train_seed ({seed!r}); give reports of vexpress-demo runs")
        seed = int(seed)
        if seed in seeds:
            first = names[seeds.index(seed)]
            raise InputError(f"{name} has train_seed {seed}, as {first}: each report of a study must come from a "
                             "different training seed")
        roles = effective_roles(rep, name)
        if roles0 is None:
            roles0 = roles
        elif roles != roles0:
            raise InputError(f"{name} has runs/roles {_fmt_roles(roles)} but {names[0]} has {_fmt_roles(roles0)}; "
                             "every report of a study must come from the same experiment")
        for run in roles0:
            per_clip = _per_clip(rep, run, name)
            clips = sorted(per_clip)
            if clips0 is None:
                clips0 = clips
            elif clips != clips0:
                raise InputError(f"{name}: run {run!r} was evaluated on {_fmt_diff(clips, clips0)} than {names[0]}; "
                                 "every run of every report must be scored on the same held-out clips")
            dest = rows.setdefault(run, {m: [] for m in CLIP_FIELDS})
            for m in CLIP_FIELDS:
                dest[m].append([per_clip[c][m] for c in clips0])
        seeds.append(seed)
        floors.append(_vae_floor(rep))
    assert roles0 is not None and clips0 is not None
    values: Dict[str, Dict[str, np.ndarray]] = {}
    for run in roles0:
        v = {m: np.asarray(rows[run][m], dtype=np.float64) for m in CLIP_FIELDS}
        v["audio_gap"] = v["mouth_err_shuffled"] - v["mouth_err_correct"]
        values[run] = {m: v[m] for m in METRICS}
    return StudyData(paths=list(names), seeds=seeds, clips=clips0, roles=dict(roles0), values=values,
                     vae_floors=floors)


def load_reports(paths: Sequence[str | Path], min_seeds: int = 1) -> StudyData:
    """Read and check ``report.json`` files of demo runs (one per training seed); see :func:`reports_to_data`.
    Every problem is a one-line :class:`~vexpress.errors.InputError` naming the file."""
    paths = [Path(p) for p in paths]
    return reports_to_data([_read(p) for p in paths], names=[str(p) for p in paths], min_seeds=min_seeds)


def _fmt_roles(roles: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(roles.items())) + "}"


def _fmt_diff(clips: Sequence[str], ref: Sequence[str]) -> str:
    extra, missing = sorted(set(clips) - set(ref)), sorted(set(ref) - set(clips))
    parts = []
    if extra:
        parts.append(f"{len(extra)} other clip(s) ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})")
    if missing:
        parts.append(f"{len(missing)} fewer ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    return " and ".join(parts) or "other clips"


# ---------------------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------------------
def paired_differences(data: StudyData, ablation: str, recipe: Optional[str] = None) -> Dict[str, np.ndarray]:
    """metric -> d[seed, clip] = recipe - ablation (the same clip, audio and training seed)."""
    recipe = recipe or data.recipe
    if ablation not in data.values:
        raise InputError(f"no run {ablation!r} in the study (runs: {', '.join(data.values)})")
    return {m: data.values[recipe][m] - data.values[ablation][m] for m in METRICS}


def crossed_bootstrap_weights(n_seeds: int, n_clips: int, resamples: int = DEFAULT_RESAMPLES,
                              seed: int = DEFAULT_SEED) -> Tuple[np.ndarray, np.ndarray]:
    """Resampling counts of a two-way (crossed) bootstrap: ``(ws [B, S], wc [B, C])``, how often each seed and
    each clip is drawn in resample b (seeds and clips drawn with replacement, independently). The mean over the
    resampled grid is then ``ws[b] @ d @ wc[b] / (S * C)`` (see :func:`bootstrap_means`)."""
    if n_seeds < 1 or n_clips < 1 or resamples < 1:
        raise InputError(f"a bootstrap needs at least one seed, clip and resample (got {n_seeds}, {n_clips}, "
                         f"{resamples})")
    rng = np.random.default_rng(seed)
    ws = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=resamples).astype(np.float64)
    wc = rng.multinomial(n_clips, np.full(n_clips, 1.0 / n_clips), size=resamples).astype(np.float64)
    return ws, wc


def bootstrap_means(d: np.ndarray, weights: Tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The mean of ``d [S, C]`` over each resampled seed x clip grid: an array [B]."""
    ws, wc = weights
    d = np.asarray(d, dtype=np.float64)
    if d.shape != (ws.shape[1], wc.shape[1]):
        raise ValueError(f"differences of shape {d.shape} do not match weights for {ws.shape[1]} seeds x "
                         f"{wc.shape[1]} clips")
    return np.einsum("bs,sc,bc->b", ws, d, wc, optimize=True) / (d.shape[0] * d.shape[1])


def bootstrap_interval(d: np.ndarray, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                       confidence: float = CONFIDENCE,
                       weights: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``d [seed, clip]`` and its percentile interval from the crossed bootstrap
    (``weights`` from :func:`crossed_bootstrap_weights`, shared across metrics for paired resampling)."""
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"expected differences [seed, clip], got shape {d.shape}")
    if weights is None:
        weights = crossed_bootstrap_weights(d.shape[0], d.shape[1], resamples, seed)
    stats = bootstrap_means(d, weights)
    alpha = (1.0 - float(confidence)) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(d.mean()), float(lo), float(hi)


def verdict(low: float, high: float, direction: str) -> str:
    """"better" when the whole interval [low, high] of recipe - ablation lies on the better side of 0 for a metric
    of this direction ("lower" / "higher"), "worse" when it lies on the worse side, else "no difference"."""
    if direction not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', not {direction!r}")
    below, above = high < 0.0, low > 0.0
    if direction == "lower":
        return VERDICT_BETTER if below else VERDICT_WORSE if above else VERDICT_NONE
    return VERDICT_BETTER if above else VERDICT_WORSE if below else VERDICT_NONE


def _sd(x: np.ndarray) -> Optional[float]:
    return float(np.std(x, ddof=1)) if x.size > 1 else None


def _num(v: Any) -> Any:
    """JSON-safe float: None for NaN/inf."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _ratio(shuffled: float, correct: float) -> Optional[float]:
    return _num(shuffled / correct) if correct > 0 else None


def run_summary(data: StudyData, run: str) -> Dict[str, Any]:
    """Mean over seeds and clips of each metric, its across-seed sd (of the per-seed means), the per-seed means, the
    shuffled/correct ratio per seed, and the goals of issue 10 per seed and on the means."""
    vals = data.values[run]
    metrics = {}
    for m in METRICS:
        per_seed = vals[m].mean(axis=1)
        metrics[m] = {"mean": float(vals[m].mean()), "sd_seeds": _sd(per_seed),
                      "per_seed": [float(x) for x in per_seed]}
    corr, shuf = vals["mouth_err_correct"].mean(axis=1), vals["mouth_err_shuffled"].mean(axis=1)
    ratios = [_ratio(s, c) for s, c in zip(shuf, corr)]
    finite = np.array([r for r in ratios if r is not None], dtype=np.float64)
    ratio = {"pooled": _ratio(float(vals["mouth_err_shuffled"].mean()), float(vals["mouth_err_correct"].mean())),
             "mean": _num(finite.mean()) if finite.size else None, "sd_seeds": _sd(finite) if finite.size else None,
             "per_seed": ratios}
    return {"role": data.roles[run], "metrics": metrics, "ratio": ratio, "goals": _goals(data, metrics, ratio)}


def _goal(value: Optional[float], limit: Optional[float], kind: str, per_seed: Sequence[Tuple[Any, Any]]) -> dict:
    def ok(v: Any, lim: Any) -> Optional[bool]:
        if v is None or lim is None:
            return None
        return bool(v <= lim) if kind == "max" else bool(v >= lim)

    seed_ok = [ok(v, lim) for v, lim in per_seed]
    checked = [s for s in seed_ok if s is not None]
    return {"value": _num(value), "limit": _num(limit), "met": ok(value, limit), "per_seed": seed_ok,
            "seeds_met": sum(checked), "seeds_checked": len(checked)}


def _goals(data: StudyData, metrics: Mapping[str, Any], ratio: Mapping[str, Any]) -> Dict[str, Any]:
    """Issue 10's goals: on the means over seeds and clips (floor: mean over the reports that have one), and seed by
    seed (each seed against its own report's floor). ``met`` is None where no VAE floor was reported."""
    floors = data.vae_floors or [None] * len(data.seeds)

    def floor_of(f: Optional[Mapping[str, float]], key: str, factor: float) -> Optional[float]:
        return f[key] * factor if f and key in f else None

    def mean_floor(key: str, factor: float) -> Optional[float]:
        v = [f[key] for f in floors if f and key in f]
        return factor * float(np.mean(v)) if v else None

    ident, mouth, pose = (metrics[m] for m in ("identity_err", "mouth_err_correct", "pose_err"))
    return {
        "identity_err": _goal(ident["mean"], mean_floor("identity_err", GOAL_IDENTITY_OVER_FLOOR), "max",
                              [(v, floor_of(f, "identity_err", GOAL_IDENTITY_OVER_FLOOR))
                               for v, f in zip(ident["per_seed"], floors)]),
        "mouth_err_correct": _goal(mouth["mean"], mean_floor("mouth_err", GOAL_MOUTH_OVER_FLOOR), "max",
                                   [(v, floor_of(f, "mouth_err", GOAL_MOUTH_OVER_FLOOR))
                                    for v, f in zip(mouth["per_seed"], floors)]),
        "ratio": _goal(ratio["pooled"], GOAL_RATIO_MIN, "min", [(r, GOAL_RATIO_MIN) for r in ratio["per_seed"]]),
        "pose_err": _goal(pose["mean"], GOAL_POSE_MAX_PX, "max", [(v, GOAL_POSE_MAX_PX) for v in pose["per_seed"]]),
    }


def analyze(data: StudyData, resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
            confidence: float = CONFIDENCE) -> Dict[str, Any]:
    """The whole study as a JSON-able dict (what ``study.json`` holds). One set of bootstrap resamples (fixed by
    ``seed``) is shared by every ablation and metric, so all intervals come from the same resampled seeds/clips."""
    resamples = int(resamples)
    if resamples < 1:
        raise InputError(f"--resamples must be at least 1 (got {resamples})")
    weights = crossed_bootstrap_weights(len(data.seeds), len(data.clips), resamples, seed)
    comparisons: Dict[str, Any] = {}
    for ab in data.ablations:
        diffs = paired_differences(data, ab)
        comparisons[ab] = {}
        for m in METRICS:
            mean, lo, hi = bootstrap_interval(diffs[m], confidence=confidence, weights=weights)
            comparisons[ab][m] = {"direction": DIRECTIONS[m], "mean_diff": mean, "ci_low": lo, "ci_high": hi,
                                  "verdict": verdict(lo, hi, DIRECTIONS[m]),
                                  "per_seed_mean_diff": [float(x) for x in diffs[m].mean(axis=1)]}
    floors = [f for f in data.vae_floors if f]
    floor_mean = {k: float(np.mean([f[k] for f in floors if k in f]))
                  for k in ("mouth_err", "identity_err", "pose_err") if any(k in f for f in floors)}
    return {
        "format": "vexpress-demo-study", "version": 1,
        "reports": list(data.paths), "seeds": list(data.seeds), "n_seeds": len(data.seeds),
        "clips": list(data.clips), "n_clips": len(data.clips),
        "recipe": data.recipe, "ablations": data.ablations, "roles": dict(data.roles),
        "directions": dict(DIRECTIONS),
        "bootstrap": {"scheme": "two-way crossed: training seeds and clips resampled with replacement independently; "
                                "statistic = mean over the resampled seed x clip grid; percentile interval",
                      "resamples": resamples, "seed": int(seed), "confidence": float(confidence)},
        "comparisons": comparisons,
        "runs": {run: run_summary(data, run) for run in data.roles},
        "vae_floor": {"per_seed": [dict(f) if f else None for f in data.vae_floors], "mean": floor_mean or None},
        "goal_thresholds": {"identity_err_over_floor_max": GOAL_IDENTITY_OVER_FLOOR,
                            "mouth_err_correct_over_floor_max": GOAL_MOUTH_OVER_FLOOR,
                            "ratio_min": GOAL_RATIO_MIN, "pose_err_max_px": GOAL_POSE_MAX_PX},
    }


# ---------------------------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------------------------
def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _signed(v: Any, digits: int = 4) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{(v if abs(v) >= 0.5 * 10 ** -digits else 0.0):+.{digits}f}"  # no "-0.0000"


def _met(g: Mapping[str, Any], digits: int = 3) -> str:
    mark = {True: "yes", False: "no", None: "n/a"}[g["met"]]
    seeds = f", {g['seeds_met']}/{g['seeds_checked']} seeds" if g["seeds_checked"] else ""
    return f"{mark} ({_f(g['value'], digits)} vs {_f(g['limit'], digits)}{seeds})"


def to_markdown(study: Mapping[str, Any]) -> str:
    """``study.md``: one table per ablation, a per-run table, the recipe's ratio per seed and the goals."""
    bs = study["bootstrap"]
    pct = f"{100 * bs['confidence']:g} %"
    seeds = ", ".join(str(s) for s in study["seeds"])
    lines = [f"# vexpress demo study: {study['recipe']} vs ablations", "",
             f"**{study['n_seeds']} training seeds** ({seeds}) x **{study['n_clips']} held-out clips** (the same "
             "clips in every report).", "",
             f"Differences are {study['recipe']} minus the ablation, clip by clip within a seed. {pct} intervals: "
             f"two-way (crossed) bootstrap over seeds and clips, {bs['resamples']} resamples, RNG seed "
             f"{bs['seed']}. Verdict \"better\"/\"worse\" (for the {study['recipe']}) when the whole interval lies "
             "on that side of 0, else \"no difference\"."]
    if study["n_seeds"] < MIN_SEEDS:
        lines += ["", f"**Warning: only {study['n_seeds']} seed(s); the study protocol asks for at least "
                      f"{MIN_SEEDS}.**"]
    for ab, comp in study["comparisons"].items():
        lines += ["", f"## {study['recipe']} minus {ab}", "",
                  f"| metric | better when | mean difference | {pct} interval | verdict |", "|---|---|---|---|---|"]
        for m, c in comp.items():
            lines.append(f"| {LABELS.get(m, m)} | {c['direction']} | {_signed(c['mean_diff'])} | "
                         f"[{_signed(c['ci_low'])}, {_signed(c['ci_high'])}] | {c['verdict']} |")
    lines += ["", "## Per run (mean over seeds and clips +- standard deviation of the per-seed means)", "",
              "| run | role | " + " | ".join(LABELS[m] for m in METRICS) + " | shuffled / correct |",
              "|---|---|" + "---|" * (len(METRICS) + 1)]
    for run, s in study["runs"].items():
        cells = [f"{_f(s['metrics'][m]['mean'])} +- {_f(s['metrics'][m]['sd_seeds'])}" for m in METRICS]
        r = s["ratio"]
        lines.append(f"| {run} | {s['role']} | " + " | ".join(cells) + f" | {_f(r['pooled'], 2)} |")
    rec = study["runs"][study["recipe"]]
    lines += ["", f"## {study['recipe']}: shuffled / correct mouth error per seed", "",
              "| seed | " + " | ".join(str(s) for s in study["seeds"]) + " |",
              "|---|" + "---|" * len(study["seeds"]),
              "| ratio | " + " | ".join(_f(r, 2) for r in rec["ratio"]["per_seed"]) + " |"]
    fl = study.get("vae_floor", {}).get("mean") or {}
    lines += ["", "## Goals of issue 10 (means over seeds and clips; seeds meeting each goal on their own)", "",
              f"VAE floor (mean over reports): mouth err {_f(fl.get('mouth_err'))}, identity err "
              f"{_f(fl.get('identity_err'))}, pose err {_f(fl.get('pose_err'), 2)} px. Goals: identity err <= "
              f"{GOAL_IDENTITY_OVER_FLOOR:g} x floor, mouth err (correct) <= {GOAL_MOUTH_OVER_FLOOR:g} x floor, "
              f"shuffled / correct >= {GOAL_RATIO_MIN:g}, pose err <= {GOAL_POSE_MAX_PX:g} px.", "",
              "| run | identity err | mouth err (correct) | shuffled / correct | pose err (px) |",
              "|---|---|---|---|---|"]
    for run, s in study["runs"].items():
        g = s["goals"]
        lines.append(f"| {run} | {_met(g['identity_err'])} | {_met(g['mouth_err_correct'])} | "
                     f"{_met(g['ratio'], 2)} | {_met(g['pose_err'], 2)} |")
    lines += ["", "Reports: " + ", ".join(f"`{p}`" for p in study["reports"]), ""]
    return "\n".join(lines)


def write_study(out_dir: str | Path, study: Mapping[str, Any]) -> Dict[str, Path]:
    """Write ``study.json`` and ``study.md`` into ``out_dir`` (each atomically); returns their paths."""
    from vexpress.utils.io import atomic_open, write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / STUDY_JSON, "md": out_dir / STUDY_MD}
    write_json(paths["json"], study)
    with atomic_open(paths["md"], "w", encoding="utf-8") as fh:
        fh.write(to_markdown(study))
    return paths


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m vexpress.evaluation.study",
        description="Recipe vs ablations over several vexpress-demo reports (one per training seed, same held-out "
                    "clips): paired differences with two-way bootstrap intervals, verdicts, per-run means, goals.")
    ap.add_argument("reports", nargs="+", type=Path, help="report.json files of vexpress-demo runs")
    ap.add_argument("--out", type=Path, required=True, help="folder for study.json and study.md")
    ap.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (default 10000)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="RNG seed of the bootstrap (default 0)")
    ap.add_argument("--min-seeds", type=int, default=MIN_SEEDS,
                    help=f"refuse fewer reports than this (default {MIN_SEEDS}, the study protocol)")
    args = ap.parse_args(argv)
    from vexpress.utils.io import check_writable_folder, removing_empty_new_folders

    try:
        if args.resamples < 1:
            raise InputError(f"--resamples must be at least 1 (got {args.resamples})")
        with removing_empty_new_folders(args.out):  # a failed study leaves no empty output folder behind
            check_writable_folder(args.out, "study output folder")
            data = load_reports(args.reports, min_seeds=args.min_seeds)
            study = analyze(data, resamples=args.resamples, seed=args.seed)
            try:
                paths = write_study(args.out, study)
            except OSError as err:
                raise InputError(f"cannot write the study into {args.out}: {err.strerror or err}") from err
    except VExpressError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    print(to_markdown(study))
    print(f"wrote {paths['json']} and {paths['md']}", file=sys.stderr)
    return 0


__all__ = ["DIRECTIONS", "METRICS", "CLIP_FIELDS", "GOAL_IDENTITY_OVER_FLOOR", "GOAL_MOUTH_OVER_FLOOR",
           "GOAL_RATIO_MIN", "GOAL_POSE_MAX_PX", "MIN_SEEDS", "StudyData", "effective_roles", "reports_to_data",
           "load_reports", "paired_differences", "crossed_bootstrap_weights", "bootstrap_means",
           "bootstrap_interval", "verdict", "run_summary", "analyze", "to_markdown", "write_study", "main"]


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
