"""Synthetic-benchmark evaluation: exact ground-truth errors, with the shuffled-audio control.

The synthetic clips (``vexpress.synthetic``) know their true mouth opening, head pose and appearance, so a
generated video can be measured against them directly (:class:`~vexpress.evaluation.specs.SyntheticSpec`):

- ``mouth_err`` with the clip's own audio vs with another clip's audio (``[shuffled audio]`` row): a model that
  uses the audio gets a much larger error with the wrong audio; ``controls["mouth_err_shuffled_over_correct"]``
  is the ratio (1.0 = the audio is ignored);
- ``identity_err`` (appearance vs the ground truth) and ``pose_err`` (keypoints vs the driving keypoints).

Typical use (``make demo``)::

    from vexpress.evaluation import SyntheticItem, evaluate_synthetic, shuffled_audio_sources
    others = shuffled_audio_sources(heldout_records)
    items = [SyntheticItem(rec, frames=gen[rec.id], fps=rec.fps) for rec in heldout_records]
    items += [SyntheticItem(rec, frames=gen_shuffled[rec.id], fps=rec.fps, audio_record=others[rec.id])
              for rec in heldout_records]
    res = evaluate_synthetic(items, run_name="stage3", output_dir="report/eval_stage3")
    res.summary["stage3"]["mouth_err"], res.controls["mouth_err_shuffled_over_correct"]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

from vexpress.errors import InputError
from vexpress.evaluation.media import Video
from vexpress.evaluation.pairs import ClipPair
from vexpress.evaluation.runner import EvalResults, evaluate_videos


@dataclass
class SyntheticItem:
    """One generated synthetic clip.

    Attributes:
        record: the clip's :class:`~vexpress.data.records.ClipRecord` (ground truth, driving keypoints, identity).
        frames: generated frames ((T, H, W, 3) uint8 RGB; also (T, 3, H, W) or (3, T, H, W), float [0, 1] or
            [-1, 1], numpy or CPU tensor), or a video file path.
        fps: frame rate of ``frames`` (default: the record's).
        audio_record: the record whose audio drove the generation; None or the record itself = correct audio.
    """

    record: Any
    frames: Any
    fps: Optional[float] = None
    audio_record: Any = None

    @property
    def shuffled(self) -> bool:
        return self.audio_record is not None and self.audio_record.id != self.record.id

    def to_pair(self) -> ClipPair:
        rec = self.record
        if isinstance(self.frames, (str, os.PathLike)):
            video = Video(path=Path(self.frames))
        else:
            video = Video(frames_=self.frames, fps_=float(self.fps or rec.fps))
        src = self.audio_record if self.shuffled else rec
        return ClipPair(
            clip_id=rec.id, generated=video, gt=Video(path=Path(rec.video)),
            audio=np.asarray(src.audio.numpy(), dtype=np.float32), driving_kps=rec.kps.double().numpy(),
            driving_kps_size=(int(rec.width), int(rec.height)), record=rec,
            audio_record=src if self.shuffled else None, condition="shuffled" if self.shuffled else "correct",
        )


def shuffled_audio_sources(records: Sequence[Any], seed: int = 0) -> Dict[str, Any]:
    """For each record, another record to take the audio from (a derangement; other identities preferred).

    Deterministic for a given ``seed`` and record order.
    """
    if len(records) < 2:
        raise InputError("the shuffled-audio control needs at least 2 clips")
    rng = np.random.default_rng(seed)
    n = len(records)
    for _ in range(1000):
        perm = rng.permutation(n)
        if all(perm[i] != i for i in range(n)):
            same_identity = sum(records[i].identity == records[perm[i]].identity for i in range(n))
            if same_identity == 0 or len({r.identity for r in records}) < 2:
                break
    else:  # pragma: no cover - rotation is always a derangement
        perm = np.roll(np.arange(n), 1)
    return {records[i].id: records[int(perm[i])] for i in range(n)}


def default_synthetic_metrics(fit_pose: bool = True, frame_stride: int = 1, max_frames: Optional[int] = None,
                              weight_free: bool = False) -> Dict[str, Any]:
    """The synthetic ground-truth metric (optionally with the weight-free landmark metrics)."""
    from vexpress.evaluation.specs import KpsDisSpec, LipSyncSpec, SyntheticSpec

    out: Dict[str, Any] = {"synthetic": SyntheticSpec(fit_pose=fit_pose, frame_stride=frame_stride,
                                                      max_frames=max_frames)}
    if weight_free:
        out.update({"lipsync": LipSyncSpec(), "kps": KpsDisSpec()})
    return out


def evaluate_synthetic(
    items: Sequence[SyntheticItem],
    run_name: str = "model",
    output_dir: Optional[str | os.PathLike] = None,
    metrics: Any = None,
    include_gt: bool = True,
    cache_dir: Optional[str | os.PathLike] = None,
    **metric_options: Any,
) -> EvalResults:
    """Evaluate generated synthetic clips against their exact ground truth.

    Args:
        items: generated clips, with correct and/or shuffled audio.
        run_name: label of the model rows.
        output_dir: where units and reports go (``res.write(output_dir)`` writes the tables; None: in memory).
        metrics: metric specs; default :func:`default_synthetic_metrics` with ``metric_options``
            (``fit_pose``, ``frame_stride``, ``max_frames``, ``weight_free``).
        include_gt: also measure the ground-truth videos (the measurement floor).

    Returns:
        :class:`~vexpress.evaluation.runner.EvalResults`: rows ``run_name``, ``run_name [shuffled audio]`` and
        ``ground truth``; ``controls["mouth_err_shuffled_over_correct"]`` when both audio conditions are given.
    """
    if not items:
        raise InputError("no synthetic clips to evaluate")
    for it in items:
        if "synthetic" not in getattr(it.record, "extra", {}):
            raise InputError(f"clip {it.record.id} is not a synthetic clip; use evaluate_videos for real clips")
    pairs = [it.to_pair() for it in items]
    specs = metrics if metrics is not None else default_synthetic_metrics(**metric_options)
    n_shuffled = sum(it.shuffled for it in items)
    return evaluate_videos(pairs, specs, run_name=run_name, output_dir=output_dir, include_gt=include_gt,
                           cache_dir=cache_dir, inputs={"benchmark": "synthetic", "clips": len(items),
                                                        "shuffled_audio_clips": n_shuffled})


def mouth_control_summary(res: EvalResults) -> Mapping[str, float]:
    """``{"mouth_err_correct", "mouth_err_shuffled", "ratio"}`` from a synthetic evaluation (NaN when missing)."""
    correct = res.summary.get(res.run_name, {}).get("mouth_err", float("nan"))
    shuffled = res.summary.get(f"{res.run_name} [shuffled audio]", {}).get("mouth_err", float("nan"))
    ratio = shuffled / correct if correct and np.isfinite(correct) and correct > 0 else float("nan")
    return {"mouth_err_correct": correct, "mouth_err_shuffled": shuffled, "ratio": ratio}


OPENING_BANDS = (0.02, 0.2)  # true openings below the first are closed; between the two small; above large


def mouth_error_split(measured: Any, true: Any, max_lag: int = 2,
                      bands: Sequence[float] = OPENING_BANDS) -> Dict[str, Any]:
    """Where a mouth error comes from, from per-frame openings ``(clips, frames)`` measured in generated clips and
    their truth (e.g. ``measure_clip``'s ``mouth`` / ``gt_mouth``, first column).

    Returns ``mouth_err`` (mean absolute error, as ``mouth_err`` of :class:`SyntheticSpec`); ``gain`` and ``offset``
    of the least-squares line measured = gain * true + offset (gain > 1: the mouth opens too far), ``bias`` (mean
    measured - true) and ``err_after_line`` (the error the line cannot explain: frames the model gets wrong, not a
    scale); ``corr``; ``err_by_lag`` and ``best_lag`` (measured frame t against true frame t - lag: a timing offset
    shows as a best lag other than 0); and the per-position means ``err_by_frame``, ``true_by_frame``,
    ``measured_by_frame`` (edge effects of the generated window show at its first and last positions);
    ``clip_gain``, the line's gain fitted to each clip alone (NaN for a clip whose truth never moves): a scale wrong
    for some clips and not others; and ``by_opening``, the frames grouped by how open the truth is (``bands``: edges
    in opening units; below the first the mouth is closed; ``band`` = [low, high], None where open-ended), each
    with its number of ``frames``, mean ``true`` and ``measured`` opening, their ``ratio`` (below 1: drawn too
    small) and mean absolute ``err``."""
    op = np.asarray(measured, dtype=np.float64)
    gt = np.asarray(true, dtype=np.float64)
    if op.ndim != 2 or op.shape != gt.shape or op.shape[1] <= 2 * max_lag:
        raise InputError(f"measured and true openings must both be (clips, frames > {2 * max_lag}), got "
                         f"{op.shape} and {gt.shape}")
    err = np.abs(op - gt)
    frames = op.shape[1]
    gain, offset = np.polyfit(gt.ravel(), op.ravel(), 1) if gt.std() > 0 else (float("nan"), float("nan"))
    lags = {}
    for k in range(-max_lag, max_lag + 1):
        a, b = (op[:, k:], gt[:, : frames - k]) if k >= 0 else (op[:, : frames + k], gt[:, -k:])
        lags[k] = float(np.abs(a - b).mean())
    corr = float(np.corrcoef(op.ravel(), gt.ravel())[0, 1]) if op.std() > 0 and gt.std() > 0 else float("nan")
    return {
        "mouth_err": float(err.mean()), "gain": float(gain), "offset": float(offset),
        "bias": float((op - gt).mean()), "err_after_line": float(np.abs(op - (gain * gt + offset)).mean()),
        "corr": corr, "best_lag": int(min(lags, key=lags.get)), "err_by_lag": lags,
        "err_by_frame": err.mean(0).tolist(), "true_by_frame": gt.mean(0).tolist(),
        "measured_by_frame": op.mean(0).tolist(),
        "clip_gain": [float(np.polyfit(g, o, 1)[0]) if g.std() > 0 else float("nan") for o, g in zip(op, gt)],
        "by_opening": _by_opening(op, gt, bands),
    }


def _by_opening(op: np.ndarray, gt: np.ndarray, bands: Sequence[float]) -> list[Dict[str, Any]]:
    edges = [-np.inf, *sorted(float(b) for b in bands), np.inf]
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (gt >= lo) & (gt < hi)
        n = int(sel.sum())
        true_mean = float(gt[sel].mean()) if n else float("nan")
        measured_mean = float(op[sel].mean()) if n else float("nan")
        band = [float(e) if np.isfinite(e) else None for e in (lo, hi)]  # None: open-ended (JSON has no inf)
        out.append({"band": band, "frames": n, "true": true_mean, "measured": measured_mean,
                    "ratio": measured_mean / true_mean if n and true_mean > 0 else float("nan"),
                    "err": float(np.abs(op[sel] - gt[sel]).mean()) if n else float("nan")})
    return out


def appearance_error_split(measured: Any, reference: Any, regions: Sequence[str] | None = None) -> Dict[str, Any]:
    """Where an identity error comes from, from appearance descriptors ``(clips, frames, 3 * regions)`` measured in
    generated clips (``measure_clip``'s ``appearance``) and the reference colours ``(clips, 3 * regions)`` they are
    scored against (the truth's frame 0, as ``identity_err`` of :class:`SyntheticSpec`).

    Returns ``rms`` (all frames; ``identity_err`` is the mean of the per-frame RMS, this the RMS of all of them),
    ``clip_rms`` (the RMS of each clip's mean error: a colour that is wrong for the whole clip) and ``frame_rms``
    (what is left around each clip's mean: flicker), with ``rms**2 = clip_rms**2 + frame_rms**2``; per region
    (``regions``: names for the groups of three channels, e.g. ``APPEARANCE_REGIONS``) its signed mean RGB error and
    both RMS parts; ``rms_by_frame`` per position in the window; and ``toward_mean``: the slope of each clip's mean
    error on its reference's distance from the clips' mean colour (about -1: every clip drawn in the average colour,
    0: no pull towards the average). NaN channels (a region outside the frame) are left out."""
    app = np.asarray(measured, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if app.ndim != 3 or ref.shape != (app.shape[0], app.shape[2]) or app.shape[2] % 3:
        raise InputError(f"measured colours must be (clips, frames, 3 x regions) and the reference (clips, 3 x "
                         f"regions), got {app.shape} and {ref.shape}")
    names = list(regions) if regions is not None else [f"region{i}" for i in range(app.shape[2] // 3)]
    if len(names) * 3 != app.shape[2]:
        raise InputError(f"{len(names)} region names for {app.shape[2]} channels (3 per region)")
    err = app - ref[:, None]
    clip_mean = np.nanmean(err, axis=1)

    def parts(e: np.ndarray, m: np.ndarray) -> dict[str, float]:
        return {"rms": float(np.sqrt(np.nanmean(e ** 2))), "clip_rms": float(np.sqrt(np.nanmean(m ** 2))),
                "frame_rms": float(np.sqrt(np.nanmean((e - m[:, None]) ** 2)))}

    by_region = {n: {"signed_mean_rgb": np.nanmean(err[..., 3 * i:3 * i + 3], axis=(0, 1)).tolist(),
                     **parts(err[..., 3 * i:3 * i + 3], clip_mean[:, 3 * i:3 * i + 3])}
                 for i, n in enumerate(names)}
    x, y = (ref - np.nanmean(ref, axis=0)).ravel(), clip_mean.ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    slope = float(np.polyfit(x[ok], y[ok], 1)[0]) if ok.sum() > 2 and x[ok].std() > 0 else float("nan")
    return {**parts(err, clip_mean), "by_region": by_region, "toward_mean": slope,
            "rms_by_frame": np.sqrt(np.nanmean(err ** 2, axis=(0, 2))).tolist()}


__all__ = ["SyntheticItem", "evaluate_synthetic", "shuffled_audio_sources", "default_synthetic_metrics",
           "mouth_control_summary", "mouth_error_split", "appearance_error_split"]
