"""The evaluation engine: score clip pairs with metric specs, with a ground-truth row computed by the same code.

:func:`evaluate_videos` is the Python API behind ``vexpress-eval``. For every pair it scores the generated video
(row = the run's name) and the ground-truth video (row ``ground truth``) with every per-clip metric, collects
features of both for the set-level metrics (FID, FVD), and aggregates everything into an :class:`EvalResults`.

Resumable: each (clip, row) result is written atomically to ``<output_dir>/units/`` with a fingerprint of the metric
settings, and features / face tracks are cached by video content under ``cache_dir``; a rerun skips what is done.
"""

from __future__ import annotations

import io
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from vexpress.errors import InputError, VExpressError
from vexpress.evaluation.media import Video, short_hash
from vexpress.evaluation.report import GT_ROW, write_results
from vexpress.evaluation.specs import ClipItem, MetricSpec, MetricUnavailable, build_specs
from vexpress.utils.io import atomic_path, write_json

ROLES = ("model", "gt")


@dataclass
class EvalResults:
    """Everything one evaluation produced (see :meth:`to_dict` for the JSON layout)."""

    run_name: str
    rows: List[Dict[str, Any]]
    summary: Dict[str, Dict[str, float]]
    stats: Dict[str, Dict[str, Dict[str, float]]]
    columns: Dict[str, str]
    protocol: Dict[str, Any]
    weights: List[Dict[str, Any]]
    notes: List[str]
    skipped: Dict[str, str]
    inputs: Dict[str, Any] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)
    controls: Dict[str, float] = field(default_factory=dict)
    #: (clip, row) units that produced no value at all: ``{"clip_id", "row", "role", "condition", "reason"}``
    unscored: List[Dict[str, Any]] = field(default_factory=list)

    def scored(self, label: Optional[str] = None) -> int:
        """Number of clips scored in a summary row (default: the model row with the correct audio)."""
        return sum(1 for r in self.rows if r["row"] == (label or self.run_name))

    def row(self, label: Optional[str] = None) -> Dict[str, float]:
        """Summary row (default: the model row with the correct audio)."""
        return self.summary[label or self.run_name]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "format": "vexpress-eval", "version": 1, "run": self.run_name, "meta": self.meta, "inputs": self.inputs,
            "summary": self.summary, "stats": self.stats, "controls": self.controls, "columns": self.columns,
            "protocol": self.protocol, "weights": self.weights, "skipped": self.skipped, "notes": self.notes,
            "clips": self.rows, "not_scored": self.unscored,
        }

    def write(self, output_dir) -> Dict[str, Path]:
        """Write ``per_clip.csv``, ``eval_summary.json`` and ``eval_summary.md`` (atomically) into ``output_dir``."""
        return write_results(self, output_dir)


def _versions() -> Dict[str, str]:
    import torch
    import torchmetrics

    import vexpress

    out = {"vexpress": getattr(vexpress, "__version__", "?"), "torch": torch.__version__,
           "torchmetrics": torchmetrics.__version__, "numpy": np.__version__, "python": platform.python_version()}
    try:
        import mediapipe

        out["mediapipe"] = mediapipe.__version__
    except Exception:  # noqa: BLE001 - optional in this report
        pass
    return out


def _clean(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _load_features(path: Path) -> Optional[np.ndarray]:
    try:
        return np.load(path, allow_pickle=False)
    except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
        return None


def _cached_features(spec: MetricSpec, video: Video, spec_key: str, cache_dir: Optional[Path]) -> np.ndarray:
    path = None
    if cache_dir is not None:
        path = cache_dir / "features" / spec.name / f"{video.fingerprint()}_{spec_key}.npy"
        if path.is_file():
            feats = _load_features(path)
            if feats is not None:
                return feats
    feats = np.asarray(spec.features(video), dtype=np.float64)
    if path is not None:
        buf = io.BytesIO()
        np.save(buf, feats, allow_pickle=False)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())
    return feats


def _read_unit(path: Path, key: str) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except Exception:  # noqa: BLE001
        return None
    return data if data.get("key") == key else None


def _aggregate(rows: List[Dict[str, Any]], columns: Sequence[str]):
    groups: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["row"], []).append(r)
    summary, stats = {}, {}
    for label, rs in groups.items():
        summary[label], stats[label] = {}, {}
        for c in columns:
            vals = np.array([float(r[c]) for r in rs if r.get(c) is not None and math.isfinite(float(r[c]))])
            if len(vals) == 0:
                continue
            summary[label][c] = float(vals.mean())
            stats[label][c] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                               "n": int(len(vals))}
        summary[label]["clips"] = len(rs)
    return summary, stats


def evaluate_videos(
    pairs: Sequence[Any],
    metrics: Any,
    run_name: str = "model",
    output_dir: Optional[str | Path] = None,
    cache_dir: Optional[str | Path] = None,
    include_gt: bool = True,
    resume: bool = True,
    inputs: Optional[Dict[str, Any]] = None,
    notes: Optional[List[str]] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> EvalResults:
    """Score ``pairs`` (:class:`~vexpress.evaluation.pairs.ClipPair`) with ``metrics``.

    Args:
        pairs: evaluation units (generated + ground-truth videos and what they were driven by).
        metrics: metric specs (list of :class:`~vexpress.evaluation.specs.MetricSpec`, or a mapping name -> config
            dict as in ``conf/metrics``). Metrics whose weights are missing are skipped with a note.
        run_name: label of the model rows (e.g. the checkpoint or stage).
        output_dir: where per-clip units and the reports go (None: nothing written, results returned).
        cache_dir: face tracks and features cached by video content (default ``<output_dir>/cache``).
        include_gt: also score the ground-truth videos (the ``ground truth`` row) with the same code.
        resume: reuse finished per-clip units whose metric settings match.
        inputs: description of the inputs for the report.
        notes: extra notes for the report.
        progress: called with one line per finished clip.

    Returns:
        :class:`EvalResults`; call ``.write(dir)`` for CSV / JSON / markdown. A (clip, row) unit with no value at all
        (unreadable video, every metric failed) is not a row: it is listed in ``unscored`` with the reason, left out
        of the set-level metrics, and the summary's ``clips`` counts scored clips only.

    Raises:
        InputError: nothing at all could be scored.
    """
    if not pairs:
        raise InputError("no clips to evaluate; check the input folders or the manifest split")
    if run_name == GT_ROW:
        raise InputError(f"run_name {GT_ROW!r} is reserved for the ground-truth row; choose another name")
    t0 = time.time()
    specs = build_specs(metrics)
    out_dir = Path(output_dir) if output_dir is not None else None
    cache = Path(cache_dir) if cache_dir is not None else (out_dir / "cache" if out_dir is not None else None)
    notes = list(notes or [])
    skipped: Dict[str, str] = {}
    active: List[MetricSpec] = []
    for spec in specs:
        try:
            spec.setup()
            active.append(spec)
            notes.extend(spec.setup_notes())
        except MetricUnavailable as err:
            skipped[spec.name] = str(err)
    clip_specs = [s for s in active if s.level == "clip"]
    set_specs = [s for s in active if s.level == "set"]
    spec_keys = {s.name: short_hash(s.config()) for s in active}
    unit_key_base = {s.name: spec_keys[s.name] for s in clip_specs}

    rows: List[Dict[str, Any]] = []
    real: Dict[str, Dict[str, np.ndarray]] = {s.name: {} for s in set_specs}
    fake: Dict[str, List[np.ndarray]] = {s.name: [] for s in set_specs}
    gt_done: set = set()
    unscored: List[Dict[str, Any]] = []
    bad_generated: set = set()  # pairs whose generated video produced nothing
    for pair in pairs:
        item = ClipItem(pair, cache)
        for role in ROLES:
            video = item.video(role)
            if video is None or (role == "gt" and (not include_gt or pair.condition != "correct"
                                                   or pair.clip_id in gt_done)):
                continue
            if role == "gt":
                gt_done.add(pair.clip_id)
            key = short_hash({"metrics": unit_key_base, "pair": pair.describe(), "video": video.fingerprint()})
            unit_path = (out_dir / "units" / role / pair.condition / f"{pair.clip_id}.json") if out_dir else None
            unit = _read_unit(unit_path, key) if (resume and unit_path is not None and unit_path.is_file()) else None
            if unit is not None:
                values, unit_notes = unit["values"], unit.get("notes", [])
                reason = unit.get("not_scored")
            else:
                values, reason = _score_unit(item, role, video, clip_specs)
                unit_notes = list(item.notes)
                if unit_path is not None:
                    write_json(unit_path, {"key": key, "clip_id": pair.clip_id, "role": role, "values": values,
                                           "notes": unit_notes, "not_scored": reason})
            for n in unit_notes:
                if n not in notes:
                    notes.append(n)
            label = run_name if role == "model" else GT_ROW
            if role == "model" and pair.condition != "correct":
                label = f"{run_name} [{pair.condition} audio]"
            if reason is not None:
                unscored.append({"clip_id": pair.clip_id, "row": label, "role": role, "condition": pair.condition,
                                 "reason": reason})
                if role == "model":
                    bad_generated.add(id(pair))
                continue
            rows.append({"clip_id": pair.clip_id, "row": label, "role": role, "condition": pair.condition,
                         **values})
        if pair.generated is not None and pair.gt is not None and pair.condition == "correct" \
                and id(pair) not in bad_generated:
            for spec in set_specs:
                key = spec_keys[spec.name]
                try:
                    gen_feats = _cached_features(spec, pair.generated, key, cache)
                    gt_fp = pair.gt.fingerprint()
                    if gt_fp not in real[spec.name]:
                        real[spec.name][gt_fp] = _cached_features(spec, pair.gt, key, cache)
                except VExpressError as err:  # an unreadable video: left out of this set-level metric
                    msg = f"{pair.clip_id}: left out of {spec.name}: {err}"
                    if msg not in notes:
                        notes.append(msg)
                    continue
                fake[spec.name].append(gen_feats)
        for v in (pair.generated, pair.gt):
            if v is not None:
                v.release()
        if progress is not None:
            progress(f"{pair.clip_id}: done")

    columns: Dict[str, str] = {}
    for spec in active:
        columns.update(spec.columns)
    _add_delta_face_sim(rows, columns)
    summary, stats = _aggregate(rows, list(columns))
    for spec in set_specs:
        try:
            values = spec.compute(list(real[spec.name].values()), fake[spec.name])
        except MetricUnavailable as err:
            notes.append(str(err))
            continue
        summary.setdefault(run_name, {}).update(values)
        for c in values:
            columns[c] = spec.columns.get(c, "info")
    controls = _controls(summary, run_name)

    protocol = {s.name: s.protocol() for s in active}
    weights = [w for s in active for w in s.weight_files()]
    n_gen = sum(1 for p in pairs if p.generated is not None)
    scored_gen = sum(1 for r in rows if r["role"] == "model")
    meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.time() - t0, 2),
            "clips": len({p.clip_id for p in pairs}), "generated_videos": n_gen, "generated_scored": scored_gen,
            "not_scored": len(unscored), "versions": _versions(),
            "metric_settings": {s.name: s.config() for s in active}}
    if not rows or (n_gen and not scored_gen):
        what = f"none of the {n_gen} generated videos" if n_gen else f"none of the {len(unscored)} videos"
        bad = [u for u in unscored if u["role"] == "model"] or unscored
        first = bad[0] if bad else None
        raise InputError(f"nothing was scored: {what} gave a metric value"
                         + (f" (e.g. {first['clip_id']}: {first['reason'][:300]})" if first else "")
                         + "; check the videos and that the clip ids match the ground truth")
    return EvalResults(run_name=run_name, rows=rows, summary=summary, stats=stats, columns=columns,
                       protocol=protocol, weights=weights, notes=notes, skipped=skipped, inputs=dict(inputs or {}),
                       meta=meta, controls=controls, unscored=unscored)


def _score_unit(item: ClipItem, role: str, video: Video, clip_specs: Sequence[MetricSpec]):
    """(values, reason): every per-clip metric of one video; ``reason`` (why nothing was scored) or None."""
    columns = [c for spec in clip_specs for c in spec.columns]
    problem = video.problem()
    if problem is not None:
        item.note(f"{item.pair.clip_id} ({role}): not scored: {problem}")
        return {c: None for c in columns}, problem
    values: Dict[str, Any] = {}
    failures: Dict[str, List[str]] = {}
    for spec in clip_specs:
        try:
            values.update(spec.clip(item, role))
        except VExpressError as err:  # bad or unusable input for this metric: note it, go on
            item.note(f"{item.pair.clip_id} ({role}): {spec.name} not scored: {err}")
            values.update({c: None for c in spec.columns})
            failures.setdefault(str(err), []).append(spec.name)
    values = {k: _clean(v) for k, v in values.items()}
    if not clip_specs or any(v is not None for v in values.values()):
        return values, None
    if failures:
        reason = "; ".join(f"{', '.join(names)}: {msg}" for msg, names in failures.items())
    else:
        reason = "no per-clip metric applies (no ground truth, audio or keypoints to compare with?)"
    return values, reason


def _add_delta_face_sim(rows: List[Dict[str, Any]], columns: Dict[str, str]) -> None:
    """V-Express' ΔFaceSim per clip: |face_sim(generated) - face_sim(ground truth)|."""
    if "face_sim" not in columns:
        return
    gt = {r["clip_id"]: r.get("face_sim") for r in rows if r["role"] == "gt"}
    for r in rows:
        if r["role"] == "model":
            g, m = gt.get(r["clip_id"]), r.get("face_sim")
            r["delta_face_sim"] = abs(m - g) if g is not None and m is not None else None
    columns["delta_face_sim"] = "min"


def _controls(summary: Dict[str, Dict[str, float]], run_name: str) -> Dict[str, float]:
    """Shuffled-audio control: ratio of mouth / lip-sync figures with shuffled vs correct audio."""
    out = {}
    shuffled = summary.get(f"{run_name} [shuffled audio]")
    correct = summary.get(run_name)
    if shuffled and correct:
        for col in ("mouth_err", "lmd_aligned", "lse_d"):
            if col in shuffled and col in correct and correct[col] > 0:
                out[f"{col}_shuffled_over_correct"] = shuffled[col] / correct[col]
    return out
