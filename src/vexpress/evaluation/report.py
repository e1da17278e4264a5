"""Evaluation outputs: per-clip CSV, JSON and markdown summaries, W&B tables, and multi-run comparison tables."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from vexpress.errors import InputError
from vexpress.utils.io import atomic_open, write_json

SUMMARY_JSON = "eval_summary.json"
SUMMARY_MD = "eval_summary.md"
PER_CLIP_CSV = "per_clip.csv"
COMPARISON = "comparison"
#: The summary row of the ground-truth videos (scored by the same code as the generated ones).
GT_ROW = "ground truth"

LABELS = {
    "fid": "FID", "fvd": "FVD", "lse_c": "LSE-C", "lse_d": "LSE-D", "av_offset": "AV offset",
    "sync_windows": "sync windows", "kps_dis": "KpsDis (mp, px)", "kps_missing": "kps missing",
    "lmd": "LMD (px)", "lmd_aligned": "LMD aligned (%IOD)", "lip_r0": "lip r0", "lip_r_best": "lip r*",
    "lip_lag": "lip lag", "lip_conf": "lip conf", "face_sim": "FaceSim", "delta_face_sim": "ΔFaceSim",
    "id_proxy_shape_err": "ID proxy shape err", "mouth_err": "mouth err", "mouth_corr": "mouth corr",
    "mouth_err_vs_audio": "mouth err vs audio", "pose_err": "pose err (px)", "identity_err": "identity err",
    "clips": "clips",
}
ARROWS = {"min": " ↓", "max": " ↑", "info": ""}
HIDDEN_IN_TABLE = ("_n_real", "_n_fake")


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "—"
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.1f}"
    return str(v)


def _table_columns(columns: Dict[str, str], summary: Dict[str, Dict[str, Any]]) -> List[str]:
    present = {k for row in summary.values() for k in row}
    cols = [c for c in columns if c in present and not c.endswith(HIDDEN_IN_TABLE)]
    return cols + (["clips"] if "clips" in present else [])


def markdown_table(summary: Dict[str, Dict[str, Any]], columns: Dict[str, str], row_order: Sequence[str],
                   first: str = "row") -> str:
    cols = _table_columns(columns, summary)
    head = f"| {first} | " + " | ".join(LABELS.get(c, c) + ARROWS.get(columns.get(c, "info"), "") for c in cols) + " |"
    sep = "|---|" + "---:|" * len(cols)
    lines = [head, sep]
    for label in row_order:
        if label in summary:
            lines.append(f"| {label} | " + " | ".join(_fmt(summary[label].get(c)) for c in cols) + " |")
    return "\n".join(lines)


def render_markdown(res) -> str:
    order = [res.run_name] + sorted(k for k in res.summary if k not in (res.run_name, GT_ROW)) + [GT_ROW]
    out = [f"# Evaluation: {res.run_name}", ""]
    meta = res.meta
    scored = f" ({meta['generated_scored']} scored)" if "generated_scored" in meta else ""
    out.append(f"{meta.get('clips', '?')} clips, {meta.get('generated_videos', '?')} generated videos{scored}; "
               f"{meta.get('created', '')}; {meta.get('seconds', '?')} s. The ground-truth row is computed by the "
               "same code on the ground-truth videos (set-level FID/FVD use them as the reference set).")
    out += ["", markdown_table(res.summary, res.columns, order), ""]
    unscored = getattr(res, "unscored", None) or []
    if unscored:
        out += ["## Not scored", "", f"{len(unscored)} videos gave no metric value and are not in the table "
                "(`clips` counts the scored ones):", ""]
        out += [f"- {u['clip_id']} ({u['row']}): {u['reason']}" for u in unscored[:50]]
        if len(unscored) > 50:
            out.append(f"- ... {len(unscored) - 50} more in {SUMMARY_JSON}")
        out.append("")
    if res.controls:
        out.append("Controls: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in res.controls.items()))
        out.append("")
    n_lines = []
    for name in ("fid", "fvd"):
        row = res.summary.get(res.run_name, {})
        if f"{name}_n_real" in row:
            n_lines.append(f"{name.upper()}: N real = {row[f'{name}_n_real']}, N generated = {row[f'{name}_n_fake']}")
    if n_lines:
        out += ["Sample sizes: " + "; ".join(n_lines) + " (Fréchet distances are biased upwards for small N).", ""]
    if res.skipped:
        out += ["## Skipped metrics", ""] + [f"- **{k}**: {v}" for k, v in res.skipped.items()] + [""]
    if res.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in res.notes[:50]]
        if len(res.notes) > 50:
            out.append(f"- ... {len(res.notes) - 50} more in {SUMMARY_JSON}")
        out.append("")
    out += ["## Protocol", ""]
    for name, proto in res.protocol.items():
        out.append(f"- **{name}**: " + "; ".join(f"{k}: {_fmt(v)}" for k, v in proto.items()))
    out.append("")
    if res.weights:
        out += ["## Weight files", "", "| role | path | size (bytes) | sha256 |", "|---|---|---:|---|"]
        out += [f"| {w['role']} | {w['path']} | {w['size_bytes']} | `{w['sha256']}` |" for w in res.weights]
        out.append("")
    if res.inputs:
        out += ["## Inputs", ""] + [f"- {k}: {_fmt(v)}" for k, v in res.inputs.items()] + [""]
    versions = meta.get("versions", {})
    if versions:
        out += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(out)


def per_clip_csv(rows: List[Dict[str, Any]]) -> str:
    keys: List[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return buf.getvalue()


def write_results(res, output_dir) -> Dict[str, Path]:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / SUMMARY_JSON, "markdown": out / SUMMARY_MD, "csv": out / PER_CLIP_CSV}
    write_json(paths["json"], res.to_dict())
    with atomic_open(paths["markdown"], "w", encoding="utf-8") as fh:
        fh.write(render_markdown(res))
    with atomic_open(paths["csv"], "w", encoding="utf-8", newline="") as fh:
        fh.write(per_clip_csv(res.rows))
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Weights & Biases


def log_wandb(res, project: str = "vexpress", mode: str = "offline", save_dir: Optional[str | os.PathLike] = None,
              group: Optional[str] = None, name: Optional[str] = None, tags: Optional[Sequence[str]] = None,
              config: Optional[Dict[str, Any]] = None, comparison: Optional[List[Dict[str, Any]]] = None) -> None:
    """Log the per-clip table, the summary table (with its ground-truth row) and summary scalars to W&B.

    Offline by default (``mode="offline"``: sync later with ``wandb sync``). Never raises for logging problems
    other than a missing wandb package.
    """
    from vexpress.utils.imports import require

    wandb = require("wandb", "logging evaluation tables to W&B")
    save = Path(save_dir) if save_dir is not None else None
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, name=name or res.run_name, group=group, mode=mode,
                     dir=str(save) if save else None, tags=list(tags or []), job_type="eval",
                     config={"eval": config or {}, "protocol": res.protocol, "weights": res.weights})
    try:
        keys: List[str] = []
        for r in res.rows:
            keys += [k for k in r if k not in keys]
        run.log({"eval/per_clip": wandb.Table(columns=keys, data=[[r.get(k) for k in keys] for r in res.rows])})
        run.log({"eval/summary": summary_table(wandb, res.summary, res.columns)})
        if comparison:
            run.log({"eval/comparison": comparison_wandb_table(wandb, comparison)})
        for label, row in res.summary.items():
            prefix = "eval" if label == res.run_name else "eval_gt" if label == GT_ROW else f"eval[{label}]"
            for k, v in row.items():
                if isinstance(v, (int, float)) and math.isfinite(float(v)):
                    run.summary[f"{prefix}/{k}"] = v
        for k, v in res.controls.items():
            run.summary[f"eval/{k}"] = v
    finally:
        run.finish()


def summary_table(wandb, summary: Dict[str, Dict[str, Any]], columns: Dict[str, str]):
    cols = _table_columns(columns, summary)
    return wandb.Table(columns=["row"] + cols, data=[[label] + [row.get(c) for c in cols]
                                                     for label, row in summary.items()])


def comparison_wandb_table(wandb, comparison: List[Dict[str, Any]]):
    keys: List[str] = []
    for r in comparison:
        keys += [k for k in r if k not in keys]
    return wandb.Table(columns=keys, data=[[r.get(k) for k in keys] for r in comparison])


# ---------------------------------------------------------------------------------------------------------------
# Comparison across runs (multirun over checkpoints or stages)


def find_summaries(root: str | os.PathLike) -> List[Path]:
    """Every ``eval_summary.json`` under ``root`` (a multirun sweep folder), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder of evaluation runs")
    return sorted(p for p in root.rglob(SUMMARY_JSON) if "units" not in p.parts)


def comparison_rows(summaries: Iterable[str | os.PathLike | Dict[str, Any]]) -> tuple:
    """One comparison table from several evaluation results.

    Returns ``(rows, columns)``: one row per run (and per audio condition), plus the ground-truth row once per
    distinct ground-truth result (identical ground-truth rows from runs on the same test set are merged).
    """
    rows: List[Dict[str, Any]] = []
    columns: Dict[str, str] = {}
    gt_seen: List[Dict[str, Any]] = []
    for item in summaries:
        data = item if isinstance(item, dict) else {
            **json.loads(Path(item).read_text()), "_where": Path(item).parent.name}
        columns.update(data.get("columns", {}))
        for label, row in data.get("summary", {}).items():
            if label == GT_ROW:
                if row in gt_seen:
                    continue
                gt_seen.append(row)
                rows.append({"run": GT_ROW if len(gt_seen) == 1 else f"{GT_ROW} ({data['run']})", **row})
            else:
                name = label
                if any(r["run"] == name for r in rows):
                    where = data.get("_where", str(len(rows)))
                    name = f"{label} ({where})"
                rows.append({"run": name, **row, **{k: v for k, v in data.get("controls", {}).items()
                                                    if label == data["run"]}})
    gt_rows = [r for r in rows if r["run"].startswith(GT_ROW)]
    return [r for r in rows if not r["run"].startswith(GT_ROW)] + gt_rows, columns


def write_comparison(summaries: Iterable[str | os.PathLike | Dict[str, Any]], output_dir: str | os.PathLike,
                     title: str = "Evaluation comparison") -> Dict[str, Path]:
    """Write ``comparison.{json,csv,md}`` (one table over runs, ground-truth row last) into ``output_dir``."""
    datas = []
    for item in summaries:
        if isinstance(item, dict):
            datas.append(item)
        else:
            datas.append({**json.loads(Path(item).read_text()), "_where": Path(item).parent.name})
    rows, columns = comparison_rows(datas)
    if not rows:
        raise InputError(f"no evaluation summaries to compare under {output_dir}")
    out = Path(output_dir)
    paths = {"json": out / f"{COMPARISON}.json", "csv": out / f"{COMPARISON}.csv", "markdown": out / f"{COMPARISON}.md"}
    runs = [{"run": d.get("run"), "protocol": d.get("protocol", {}), "weights": d.get("weights", []),
             "skipped": d.get("skipped", {}), "inputs": d.get("inputs", {}), "meta": d.get("meta", {})} for d in datas]
    write_json(paths["json"], {"rows": rows, "columns": columns, "runs": runs})
    with atomic_open(paths["csv"], "w", encoding="utf-8", newline="") as fh:
        fh.write(per_clip_csv(rows))
    summary = {r["run"]: {k: v for k, v in r.items() if k != "run"} for r in rows}
    all_cols = dict(columns)
    for r in rows:
        for k in r:
            if k.endswith("_shuffled_over_correct"):
                all_cols[k] = "max"
    md = [f"# {title}", "", markdown_table(summary, all_cols, [r["run"] for r in rows], first="run"), ""]
    protocols = {json.dumps(r["protocol"], sort_keys=True, default=str) for r in runs}
    md += ["## Protocol", ""]
    if len(protocols) > 1:
        md.append("**The runs used different metric settings; compare with care.**")
        md.append("")
    for r in runs if len(protocols) > 1 else runs[:1]:
        prefix = f"{r['run']} / " if len(protocols) > 1 else ""
        md += [f"- **{prefix}{name}**: " + "; ".join(f"{k}: {_fmt(v)}" for k, v in proto.items())
               for name, proto in r["protocol"].items()]
    weights = {(w["role"], w["sha256"]): w for r in runs for w in r["weights"]}
    if weights:
        md += ["", "## Weight files", "", "| role | path | size (bytes) | sha256 |", "|---|---|---:|---|"]
        md += [f"| {w['role']} | {w['path']} | {w['size_bytes']} | `{w['sha256']}` |" for w in weights.values()]
    skipped = {k: v for r in runs for k, v in r["skipped"].items()}
    if skipped:
        md += ["", "## Skipped metrics", ""] + [f"- **{k}**: {v}" for k, v in skipped.items()]
    md.append("")
    with atomic_open(paths["markdown"], "w", encoding="utf-8") as fh:
        fh.write("\n".join(md))
    return paths


from hydra.experimental.callback import Callback  # noqa: E402  (hydra is a light, regular dependency)


class ComparisonCallback(Callback):
    """Hydra callback: at the end of a multirun, one comparison table over all jobs of the sweep.

    Configured in ``conf/eval.yaml`` under ``hydra.callbacks``; also logs the table to W&B when ``wandb`` is on.
    """

    def __init__(self, wandb: Optional[Dict[str, Any]] = None):
        self.wandb = dict(wandb or {})

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            summaries = find_summaries(sweep_dir)
        except InputError:
            return
        if not summaries:
            return
        write_comparison(summaries, sweep_dir)
        if self.wandb.get("enabled"):
            try:
                from vexpress.utils.imports import require

                wandb = require("wandb", "logging the comparison table")
                rows, _ = comparison_rows(summaries)
                run = wandb.init(project=self.wandb.get("project", "vexpress"), mode=self.wandb.get("mode", "offline"),
                                 dir=str(sweep_dir), name="comparison", group=self.wandb.get("group"),
                                 job_type="eval-comparison")
                try:
                    run.log({"eval/comparison": comparison_wandb_table(wandb, rows)})
                finally:
                    run.finish()
            except Exception as err:  # noqa: BLE001 - the table files are written; logging is best effort
                print(f"warning: comparison table not logged to W&B: {str(err).splitlines()[0][:160]}")
