"""Preprocess real talking-head videos into dataset records (the work behind ``vexpress-preprocess``).

Per video: decode with PyAV; mediapipe face detection + mesh on every frame (video mode); per frame the face box,
the V-Kps points, the 40 lip landmarks and the evaluation landmark set; the audio track at 16 kHz mono and its
features. Quality filters reject a clip with a reason (no/several faces, face too small, too short, no audio,
audio and video lengths that disagree, unreadable or truncated file). Each kept clip is written atomically
(:func:`vexpress.data.records.write_clip`); each rejected one leaves only a small ``skipped/<id>.json`` note.
Runs are resumable and idempotent: finished clips (and known-bad files that did not change) are not redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from vexpress.data.video import VIDEO_SUFFIXES
from vexpress.errors import InputError, VExpressError

SKIPPED_DIR = "skipped"
REPORT = "report.json"


@dataclass
class PreprocessConfig:
    """Filters and options (every field is a ``conf/preprocess.yaml`` key).

    Attributes:
        min_duration: shortest clip kept (seconds).
        min_single_face: least fraction of frames with exactly one face (1.0 = the official rule: every frame).
        min_face_size: least median face-box side in pixels.
        max_av_mismatch: largest |audio - video| duration difference (seconds).
        analysis_size: frames are resized so their longer side is at most this before face analysis (coordinates
            are mapped back to the video's pixels); 0 = native size.
        audio_encoder: features stored per clip (``{name: logmel}`` or ``{name: wav2vec2, path: DIR}``).
        val_fraction: share of identities put in the ``val`` split (by a hash of the identity).
        identity: how a clip's identity is named: ``stem`` (file name without a trailing ``_<number>``, e.g.
            HDTF ``WRA_KellyAyotte_000`` -> ``WRA_KellyAyotte``), ``parent`` (its folder) or ``file``.
        reencode: write ``clips/<id>/video.mp4`` (H.264, keyframe every ``gop`` frames) instead of pointing at the
            source: cheap seeks for long-GOP sources, and a self-contained dataset.
        gop, crf: of the re-encoded video.
        retry_skipped: re-examine files skipped by an earlier run even when they did not change.
    """

    min_duration: float = 1.0
    min_single_face: float = 0.95
    min_face_size: float = 64.0
    max_av_mismatch: float = 0.5
    analysis_size: int = 512
    audio_encoder: dict = field(default_factory=lambda: {"name": "logmel"})
    val_fraction: float = 0.05
    identity: str = "stem"
    reencode: bool = False
    gop: int = 12
    crf: int = 18
    retry_skipped: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "PreprocessConfig":
        d = {k: v for k, v in dict(d or {}).items() if not str(k).startswith("_")}
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputError(f"unknown preprocessing keys {unknown}; valid: {sorted(cls.__dataclass_fields__)}")
        if "audio_encoder" in d:
            d["audio_encoder"] = dict(d["audio_encoder"] or {"name": "logmel"})
        return cls(**d)

    def key(self) -> str:
        """Hash of the settings that change a record (a changed key redoes the clips)."""
        body = {k: v for k, v in asdict(self).items() if k != "retry_skipped"}
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:12]


class ClipRejected(VExpressError):
    """A clip fails a quality filter (the message is the reason shown in the report)."""


# ---- naming -------------------------------------------------------------------------------------------------

def find_videos(inputs: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Files from folders (recursive, by suffix), single files, or ``.txt`` lists (one path per line)."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    out: list[Path] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES
                              and not q.name.startswith(".")))
        elif p.is_file() and p.suffix.lower() == ".txt":
            for number, line in enumerate(p.read_text().splitlines(), 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    q = Path(line).expanduser()
                    q = q if q.is_absolute() else (p.parent / q)
                    if not q.is_file():
                        raise InputError(f"{p}, line {number}: {q} does not exist or is not a file; fix or remove "
                                         "that line of the list")
                    out.append(q)
        elif p.exists():
            out.append(p)
        else:
            raise InputError(f"input {p} does not exist; give video files, folders or .txt lists of paths")
    seen, unique = set(), []
    for q in out:
        r = q.resolve()
        if r not in seen:
            seen.add(r)
            unique.append(r)
    return unique


def clip_id_for(path: Path, root: Path | None = None) -> str:
    """A folder-safe id: the path relative to the input root (or the stem), plus a short hash if needed."""
    rel = path.relative_to(root) if root and path.is_relative_to(root) else Path(path.name)
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(rel.with_suffix("")).replace(os.sep, "__")).strip("._") or "clip"
    if len(base) > 80:
        base = base[:60] + "_" + hashlib.sha1(str(rel).encode()).hexdigest()[:8]
    return base


def identity_for(path: Path, rule: str) -> str:
    if rule == "parent":
        return path.parent.name or "unknown"
    if rule == "file":
        return path.stem
    if rule != "stem":
        raise InputError(f"identity rule must be stem, parent or file, got {rule!r}")
    return re.sub(r"([_-]?\d+)+$", "", path.stem) or path.stem


def split_for(identity: str, val_fraction: float) -> str:
    h = int(hashlib.sha1(identity.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def source_signature(path: Path) -> dict:
    st = path.stat()
    return {"source": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# ---- per-clip work ------------------------------------------------------------------------------------------

def interpolate_invalid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill rows of (T, ...) ``values`` where ``valid`` is False by linear interpolation over time."""
    if valid.all() or not valid.any():
        return values
    t = np.arange(values.shape[0])
    flat = values.reshape(values.shape[0], -1).astype(np.float64)
    out = np.empty_like(flat)
    for j in range(flat.shape[1]):
        out[:, j] = np.interp(t, t[valid], flat[valid, j])
    return out.reshape(values.shape).astype(values.dtype)


def analyze_video(path: Path, analyzer, analysis_size: int = 512,
                  progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Decode every frame and run the face analyzer: per-frame arrays and face counts (native pixels)."""
    from vexpress.data.video import VideoReader, iter_frames
    from vexpress.preprocessing.face import MOUTH_LANDMARKS, RECORD_LANDMARKS

    reader = VideoReader(path)
    w, h = reader.size
    n_index = reader.num_frames
    scale = 1.0
    size = None
    if analysis_size and max(w, h) > analysis_size:
        scale = analysis_size / float(max(w, h))
        size = (max(2, int(round(w * scale))), max(2, int(round(h * scale))))
    inv = np.array([w / size[0], h / size[1]]) if size else np.array([1.0, 1.0])
    rows: dict[str, list] = {"bbox": [], "kps": [], "mouth": [], "landmarks": [], "count": [], "score": []}
    analyzer.reset()
    for i, frame in enumerate(iter_frames(path, size=size)):
        faces = analyzer(frame)
        full = [f for f in faces if f.landmarks is not None]
        rows["count"].append(len(faces))
        if len(faces) == 1 and full:
            f = full[0]
            rows["bbox"].append(f.bbox * np.tile(inv, 2))
            rows["kps"].append(f.kps * inv)
            rows["mouth"].append(f.landmarks[list(MOUTH_LANDMARKS)] * inv)
            rows["landmarks"].append(f.landmarks[list(RECORD_LANDMARKS)] * inv)
            rows["score"].append(f.score)
        else:
            rows["bbox"].append(np.full(4, np.nan))
            rows["kps"].append(np.full((3, 2), np.nan))
            rows["mouth"].append(np.full((len(MOUTH_LANDMARKS), 2), np.nan))
            rows["landmarks"].append(np.full((len(RECORD_LANDMARKS), 2), np.nan))
            rows["score"].append(0.0)
        if progress:
            progress(i)
    n = len(rows["count"])
    if n == 0:
        raise ClipRejected("no decodable frames")
    if n < n_index * 0.98 - 1:
        raise ClipRejected(f"truncated: decoded {n} of {n_index} frames")
    out = {k: np.asarray(v, dtype=np.float32) for k, v in rows.items()}
    out["count"] = out["count"].astype(np.int64)
    out["width"], out["height"], out["fps"] = np.array(w), np.array(h), np.array(reader.fps)
    return out


def process_clip(path: Path, out_root: Path, clip_id: str, cfg: PreprocessConfig, analyzer, encoder) -> dict:
    """Make one record; returns its meta. Raises :class:`ClipRejected`/:class:`InputError` with the reason."""
    import torch

    from vexpress.audio import load_audio
    from vexpress.data.records import write_clip
    from vexpress.data.video import iter_frames, probe_video, write_video

    try:
        info = probe_video(path)
    except InputError as err:
        raise ClipRejected(f"unreadable video: {err}") from err
    if info.is_still_image:
        raise ClipRejected(f"unreadable video: {path.name} is a still image ({info.codec}), not a video")
    if info.duration < cfg.min_duration:
        raise ClipRejected(f"too short: {info.duration:.2f} s < {cfg.min_duration:g} s")
    if not info.has_audio:
        raise ClipRejected("no audio track")
    try:
        wav = load_audio(path)
    except InputError as err:
        raise ClipRejected(f"unreadable audio: {err}") from err
    a_dur = wav.numel() / 16000.0
    if abs(a_dur - info.duration) > cfg.max_av_mismatch:
        raise ClipRejected(f"audio and video lengths differ: audio {a_dur:.2f} s, video {info.duration:.2f} s "
                           f"(> {cfg.max_av_mismatch:g} s)")
    try:
        a = analyze_video(path, analyzer, cfg.analysis_size)
    except InputError as err:
        raise ClipRejected(f"corrupt or truncated video: {err}") from err
    counts = a["count"]
    t = counts.size
    single = counts == 1
    frac = float(single.mean())
    if frac < cfg.min_single_face:
        none, many = float((counts == 0).mean()), float((counts > 1).mean())
        if many >= none:
            raise ClipRejected(f"two or more faces in {many:.0%} of frames (need exactly one face in "
                               f"{cfg.min_single_face:.0%})")
        raise ClipRejected(f"no face in {none:.0%} of frames (need exactly one face in {cfg.min_single_face:.0%})")
    valid = single & np.isfinite(a["kps"]).all(axis=(1, 2))
    sizes = np.sqrt(np.clip(a["bbox"][valid, 2] - a["bbox"][valid, 0], 0, None)
                    * np.clip(a["bbox"][valid, 3] - a["bbox"][valid, 1], 0, None))
    med = float(np.median(sizes)) if sizes.size else 0.0
    if med < cfg.min_face_size:
        raise ClipRejected(f"face too small: median box {med:.0f} px < {cfg.min_face_size:g} px")
    feats = encoder.encode(wav)
    tensors = {k: torch.from_numpy(interpolate_invalid(a[k], valid).astype(np.float32))
               for k in ("bbox", "kps", "mouth", "landmarks")}
    tensors.update(valid=torch.from_numpy(valid.astype(np.uint8)), audio=wav, audio_features=feats,
                   face_score=torch.from_numpy(a["score"]))
    identity = identity_for(path, cfg.identity)
    meta = {"id": clip_id, "split": split_for(identity, cfg.val_fraction), "identity": identity,
            "fps": float(a["fps"]), "num_frames": t, "width": int(a["width"]), "height": int(a["height"]),
            "audio_encoder": encoder.name, "kind": "real", "audio_dim": int(feats.shape[1]),
            "audio_rate_hz": float(encoder.rate_hz), "single_face_fraction": round(frac, 4),
            "median_face_size": round(med, 1), "preprocess_key": cfg.key(), **source_signature(path)}

    def reencode(dst: Path) -> None:
        frames = np.stack(list(iter_frames(path)))
        write_video(dst, frames[:t], info.fps, audio=wav.numpy(), crf=cfg.crf, gop=cfg.gop)

    if not cfg.reencode:
        meta["video"] = str(path)
    write_clip(out_root, meta, tensors, video_writer=reencode if cfg.reencode else None)
    return meta


# ---- the run ------------------------------------------------------------------------------------------------

_WORKER: dict = {}


def _worker_setup(cfg_dict: dict, parent_pid: int | None = None) -> None:
    """Per-process set-up. In a pool worker (``parent_pid`` given) the process also ends when its parent ends, and
    SIGTERM (what a stopped run sends its workers) ends it through ``SystemExit``, so the clip it was writing leaves
    no temporary folder."""
    from vexpress.utils.native import exit_on_sigterm, exit_with_parent, single_threaded_worker

    if parent_pid is not None:
        exit_with_parent(parent_pid)
        exit_on_sigterm()
    single_threaded_worker()
    from vexpress.audio import build_audio_encoder
    from vexpress.preprocessing.face import FaceAnalyzer

    cfg = PreprocessConfig.from_dict(cfg_dict)
    _WORKER.update(cfg=cfg, analyzer=FaceAnalyzer(mode="video", max_faces=2),
                   encoder=build_audio_encoder(cfg.audio_encoder), parent=parent_pid)


def _work(job: tuple[str, str, str]) -> dict:
    """Process one file in a worker; never raises for a bad input (returns a skip record)."""
    src, out_root, clip_id = job
    if not _WORKER:
        raise RuntimeError("worker not initialised")
    if _WORKER.get("parent") is not None:
        from vexpress.utils.native import parent_alive

        if not parent_alive(_WORKER["parent"]):  # the run was killed: write nothing more
            os._exit(1)
    cfg = _WORKER["cfg"]
    t0 = time.perf_counter()
    try:
        meta = process_clip(Path(src), Path(out_root), clip_id, cfg, _WORKER["analyzer"], _WORKER["encoder"])
        return {"id": clip_id, "status": "kept", "source": src, "seconds": time.perf_counter() - t0,
                "num_frames": meta["num_frames"], "split": meta["split"]}
    except VExpressError as err:
        reason = str(err)
    except Exception as err:  # noqa: BLE001 - a crash on one file must not stop the run; it is reported
        reason = f"internal error ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})"
    return {"id": clip_id, "status": "skipped", "source": src, "reason": reason,
            "seconds": time.perf_counter() - t0}


def _reason_class(reason: str) -> str:
    for key in ("no audio track", "too short", "two or more faces", "no face", "face too small", "lengths differ",
                "unreadable", "truncated", "corrupt", "internal error"):
        if key in reason:
            return key
    return reason.split(":")[0][:40]


def reconcile(out: Path, current_ids: Iterable[str]) -> list[str]:
    """Remove what earlier runs made for sources that are no longer among the inputs; returns the removed clip ids.

    Clip folders written by this preprocessing (imported official clips are left alone) and skip notes whose id is
    not current go. The manifest is first rewritten (atomically) without those clips, so it never lists a missing
    folder; each folder is then moved to a ``.*.old`` name (cleaned up by the next run if this one is killed) and
    deleted.
    """
    from vexpress.data.records import CLIPS_DIR, MANIFEST, META
    from vexpress.utils.io import write_json

    keep = set(current_ids)
    clips = out / CLIPS_DIR
    stale: list[str] = []
    if clips.is_dir():
        for d in sorted(clips.iterdir()):
            if d.name.startswith(".") or d.name in keep or not d.is_dir() or not (d / META).is_file():
                continue
            try:
                meta = json.loads((d / META).read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(meta, dict) and "preprocess_key" in meta:
                stale.append(d.name)
    if stale:
        manifest = out / MANIFEST
        if manifest.is_file():
            try:
                body = json.loads(manifest.read_text())
            except json.JSONDecodeError:  # rewritten at the end of the run anyway
                body = None
            if isinstance(body, dict):
                entries = [e for e in body.get("clips", []) if e.get("id") not in stale]
                write_json(manifest, {**body, "num_clips": len(entries), "clips": entries})
            else:
                manifest.unlink()
        for cid in stale:
            trash = Path(tempfile.mkdtemp(prefix=f".{cid}.", suffix=".old", dir=clips))
            os.replace(clips / cid, trash / cid)
            shutil.rmtree(trash, ignore_errors=True)
    notes = out / SKIPPED_DIR
    if notes.is_dir():
        for note in notes.glob("*.json"):
            if note.stem not in keep:
                note.unlink()
    return stale


def preprocess(inputs: Sequence[str | os.PathLike] | str, out_root: str | os.PathLike,
               cfg: PreprocessConfig | Mapping[str, Any] | None = None, workers: int = 1,
               progress: bool = True, input_root: str | os.PathLike | None = None) -> dict:
    """Preprocess videos into ``out_root`` (records + manifest + report); returns the report dict.

    The output is reconciled with ``inputs``: clips (and skip notes) of sources no longer listed are removed
    (``report["removed_clips"]``). Folders this call creates are removed again if they stay empty.
    """
    from vexpress.data.records import CLIPS_DIR
    from vexpress.utils.io import removing_empty_new_folders

    if not isinstance(cfg, PreprocessConfig):
        cfg = PreprocessConfig.from_dict(cfg)
    out = Path(out_root).expanduser()
    with removing_empty_new_folders(out, out / CLIPS_DIR, out / SKIPPED_DIR):
        return _preprocess(inputs, out, cfg, workers, progress, input_root)


def _preprocess(inputs: Sequence[str | os.PathLike] | str, out: Path, cfg: PreprocessConfig, workers: int,
                progress: bool, input_root: str | os.PathLike | None) -> dict:
    from vexpress.data.records import MANIFEST, clean_partial, is_clip_done, read_clip, scan_clips, write_manifest
    from vexpress.utils.io import write_json

    out.mkdir(parents=True, exist_ok=True)
    clean_partial(out)
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    files = find_videos(items)
    if not files:
        raise InputError(f"no videos found in {', '.join(map(str, items))} (looked for {', '.join(VIDEO_SUFFIXES)})")
    if input_root:
        base = Path(input_root).resolve()
    else:
        base = Path(items[0]).resolve() if len(items) == 1 and Path(items[0]).is_dir() else None
    ids: dict[str, Path] = {}
    for f in files:
        cid = clip_id_for(f, base)
        if cid in ids:
            cid = f"{cid}_{hashlib.sha1(str(f).encode()).hexdigest()[:6]}"
        ids[cid] = f
    removed = reconcile(out, ids)
    key = cfg.key()
    results: list[dict] = []
    jobs: list[tuple[str, str, str]] = []
    for cid, f in ids.items():
        sig = source_signature(f)
        if is_clip_done(out, cid):
            meta = read_clip(out / "clips" / cid).extra
            if meta.get("preprocess_key") == key and meta.get("size") == sig["size"] and \
                    meta.get("mtime_ns") == sig["mtime_ns"]:
                results.append({"id": cid, "status": "kept", "source": str(f), "resumed": True})
                continue
        note = out / SKIPPED_DIR / f"{cid}.json"
        if note.is_file() and not cfg.retry_skipped:
            old = json.loads(note.read_text())
            if old.get("preprocess_key") == key and old.get("size") == sig["size"] and \
                    old.get("mtime_ns") == sig["mtime_ns"]:
                results.append({"id": cid, "status": "skipped", "source": str(f), "reason": old["reason"],
                                "resumed": True})
                continue
        jobs.append((str(f), str(out), cid))

    bar = None
    if progress and jobs:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="preprocess", unit="clip")
    done: list[dict] = []
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        from vexpress.utils.native import stop_pool

        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn"),
                                 initializer=_worker_setup, initargs=(asdict(cfg), os.getpid())) as ex:
            try:
                futures = [ex.submit(_work, j) for j in jobs]
                for fut in as_completed(futures):
                    done.append(fut.result())
                    if bar:
                        bar.update(1)
            except BaseException:  # stopped (Ctrl-C, SIGTERM) or failed: do not wait for the queued clips
                stop_pool(ex)
                raise
    else:
        _worker_setup(asdict(cfg))
        try:
            for j in jobs:
                done.append(_work(j))
                if bar:
                    bar.update(1)
        finally:
            _WORKER["analyzer"].close()
            _WORKER.clear()
    if bar:
        bar.close()
    for r in done:
        note = out / SKIPPED_DIR / f"{r['id']}.json"
        if r["status"] == "skipped":
            write_json(note, {**source_signature(Path(r["source"])), "reason": r["reason"], "preprocess_key": key})
        elif note.exists():
            note.unlink()
    results.extend(done)

    kept_ids = {r["id"] for r in results if r["status"] == "kept"}
    records = [c for c in scan_clips(out) if c.id in kept_ids]
    if records:
        write_manifest(out, records, kind="real", audio_encoder={"name": records[0].audio_encoder,
                       "dim": int(records[0].extra.get("audio_dim", 0)),
                       "rate_hz": records[0].extra.get("audio_rate_hz")}, preprocess=asdict(cfg), preprocess_key=key)
    elif (out / MANIFEST).is_file():  # no usable clip: no dataset either (the report says why)
        (out / MANIFEST).unlink()
    skipped = [r for r in results if r["status"] == "skipped"]
    by_reason: dict[str, int] = {}
    for r in skipped:
        cls = _reason_class(r["reason"])
        by_reason[cls] = by_reason.get(cls, 0) + 1
    report = {"output": str(out), "inputs": len(ids), "kept": len(kept_ids), "skipped": len(skipped),
              "processed_now": len(done), "resumed": sum(1 for r in results if r.get("resumed")),
              "skipped_by_reason": by_reason,
              "skipped_clips": [{"id": r["id"], "source": r["source"], "reason": r["reason"]} for r in skipped],
              "kept_clips": sorted(kept_ids), "removed_clips": removed}
    write_json(out / REPORT, report)
    return report


def format_report(report: Mapping[str, Any]) -> str:
    lines = [f"{report['kept']} kept, {report['skipped']} skipped of {report['inputs']} videos "
             f"({report['processed_now']} processed now, {report['resumed']} done before) -> {report['output']}"]
    removed = report.get("removed_clips") or []
    if removed:
        lines.append(f"  removed {len(removed)} clip(s) whose source is no longer among the inputs: "
                     + ", ".join(removed[:10]) + (f" and {len(removed) - 10} more" if len(removed) > 10 else ""))
    for reason, n in sorted(report["skipped_by_reason"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  skipped {n}: {reason}")
    for r in report["skipped_clips"][:20]:
        lines.append(f"    {r['source']}: {r['reason']}")
    if len(report["skipped_clips"]) > 20:
        lines.append(f"    ... {len(report['skipped_clips']) - 20} more in {report['output']}/{REPORT}")
    return "\n".join(lines)


def iter_sources(paths: Iterable[str]) -> list[Path]:  # small helper for the CLI
    return find_videos(list(paths))
