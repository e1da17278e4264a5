"""Import data prepared by the official scripts (meta JSON + ``*_face_info.pt`` + ``*_aud_embeds.pt``).

The official files are pickles. They are read with the restricted loader of :mod:`vexpress.utils.safe_load`
(tensors, numpy arrays/scalars and plain containers only), never with ``weights_only=False``.

Mapping to our records: ``bbox`` and ``kps[:3]`` come straight from insightface; ``mouth`` is the 20-point mouth
of ``landmark_2d_106[52:72]`` (the official lip mask uses its box); ``audio_features`` are the shipped
``global_embeds`` (wav2vec2, encoder name ``wav2vec2:official``); ``audio`` is decoded from the video. Frames
without exactly one face are invalid (the official loader expects one face everywhere).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from vexpress.errors import InputError
from vexpress.utils.safe_load import safe_torch_load

OFFICIAL_ENCODER = "wav2vec2:official"


def read_official_meta(path: str | os.PathLike) -> list[dict]:
    """The list of ``{"video", "face_info", "audio_embeds"}`` entries (tolerates the README's trailing commas)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"official meta file not found: {path}")
    text = path.read_text()
    text = re.sub(r",\s*([\]}])", r"\1", text)  # trailing commas
    text = re.sub(r"\]\s*\.\.\.\s*$", "]", text.strip())
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not a JSON list of clips ({err.msg} at line {err.lineno})") from err
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise InputError(f"{path} must hold a list of {{video, face_info, audio_embeds}} objects")
    for e in data:
        missing = [k for k in ("video", "face_info", "audio_embeds") if k not in e]
        if missing:
            raise InputError(f"{path}: an entry lacks {missing}")
    return data


def load_face_info(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Per-frame arrays from an official ``*_face_info.pt``: bbox (T,4), kps (T,3,2), mouth (T,20,2), valid (T,),
    landmarks (T,106,2), score (T,)."""
    info = safe_torch_load(path, "official face info")
    if not isinstance(info, (list, tuple)) or not info:
        raise InputError(f"{path} is not an official face-info list (one entry per frame)")
    t = len(info)
    out = {"bbox": np.full((t, 4), np.nan, np.float32), "kps": np.full((t, 3, 2), np.nan, np.float32),
           "mouth": np.full((t, 20, 2), np.nan, np.float32), "landmarks": np.full((t, 106, 2), np.nan, np.float32),
           "score": np.zeros(t, np.float32), "valid": np.zeros(t, bool)}
    for i, faces in enumerate(info):
        if not isinstance(faces, (list, tuple)) or len(faces) != 1 or not isinstance(faces[0], dict):
            continue
        f = faces[0]
        try:
            out["bbox"][i] = np.asarray(f["bbox"], np.float32)[:4]
            out["kps"][i] = np.asarray(f["kps"], np.float32)[:3]
            lm = f.get("landmark_2d_106")
            if lm is not None:
                lm = np.asarray(lm, np.float32)
                out["landmarks"][i] = lm
                out["mouth"][i] = lm[52:72]
            else:  # no landmarks: a mouth box from the insightface mouth corners (kps 3, 4)
                k5 = np.asarray(f["kps"], np.float32)
                out["mouth"][i] = np.linspace(k5[3], k5[4], 20) if k5.shape[0] >= 5 else np.nan
            out["score"][i] = float(f.get("det_score", 1.0))
            out["valid"][i] = bool(np.isfinite(out["kps"][i]).all() and np.isfinite(out["mouth"][i]).all())
        except (KeyError, ValueError, TypeError) as err:
            raise InputError(f"{path}: frame {i} is malformed ({err}); re-run the official extract_face_info.py") \
                from err
    return out


def load_audio_embeds(path: str | os.PathLike) -> "torch.Tensor":  # noqa: F821
    """``global_embeds`` [N, 1, 768] of an official ``*_aud_embeds.pt`` -> (N, 768) float32."""
    obj = safe_torch_load(path, "official audio embeddings")
    emb = obj.get("global_embeds") if isinstance(obj, dict) else obj
    import torch

    if not isinstance(emb, torch.Tensor) or emb.ndim not in (2, 3) or emb.shape[0] < 1:
        raise InputError(f"{path} has no global_embeds tensor [N, 1, D]")
    return emb.reshape(emb.shape[0], -1).float().contiguous()


def import_official(meta_paths: str | os.PathLike | Sequence[str | os.PathLike], out_root: str | os.PathLike,
                    base_dir: str | os.PathLike | None = None, identity_rule: str = "stem",
                    val_fraction: float = 0.0) -> dict:
    """Convert official preparations listed in meta JSON file(s) into a vexpress dataset; returns a report.

    Relative paths in the meta files are resolved against ``base_dir`` (default: the meta file's folder).
    A clip whose files are missing, unreadable or inconsistent is skipped with its reason; nothing partial is
    written.
    """
    import torch

    from vexpress.audio import load_audio
    from vexpress.data.records import clean_partial, scan_clips, write_clip, write_manifest
    from vexpress.data.video import probe_video
    from vexpress.preprocessing.clips import clip_id_for, identity_for, split_for
    from vexpress.utils.io import write_json

    metas = [meta_paths] if isinstance(meta_paths, (str, os.PathLike)) else list(meta_paths)
    out = Path(out_root).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    clean_partial(out)
    kept, skipped = [], []
    for meta in metas:
        meta = Path(meta)
        base = Path(base_dir) if base_dir else meta.parent
        for entry in read_official_meta(meta):
            paths = {k: (Path(entry[k]) if Path(entry[k]).is_absolute() else base / entry[k]).resolve()
                     for k in ("video", "face_info", "audio_embeds")}
            cid = clip_id_for(paths["video"])
            try:
                info = probe_video(paths["video"])
                faces = load_face_info(paths["face_info"])
                feats = load_audio_embeds(paths["audio_embeds"])
                t = faces["kps"].shape[0]
                if abs(t - info.num_frames) > 1:
                    raise InputError(f"face info has {t} frames, the video {info.num_frames}")
                if not faces["valid"].any():
                    raise InputError("no frame with exactly one face")
                wav = load_audio(paths["video"]) if info.has_audio else None
                if wav is None:
                    raise InputError("the video has no audio track")
                valid = faces["valid"]
                from vexpress.preprocessing.clips import interpolate_invalid

                tensors = {k: torch.from_numpy(interpolate_invalid(faces[k], valid)) for k in
                           ("bbox", "kps", "mouth", "landmarks")}
                tensors.update(valid=torch.from_numpy(valid.astype(np.uint8)), audio=wav, audio_features=feats,
                               face_score=torch.from_numpy(faces["score"]))
                identity = identity_for(paths["video"], identity_rule)
                rec = write_clip(out, {
                    "id": cid, "split": split_for(identity, val_fraction), "identity": identity,
                    "video": str(paths["video"]), "fps": info.fps, "num_frames": t, "width": info.width,
                    "height": info.height, "audio_encoder": OFFICIAL_ENCODER, "kind": "real",
                    "audio_dim": int(feats.shape[1]), "audio_rate_hz": 50.0, "landmark_set": "insightface106",
                    "mouth_set": "insightface106[52:72]", "source": str(paths["video"]),
                    "official": {k: str(v) for k, v in paths.items()}}, tensors)
                kept.append(rec.id)
            except InputError as err:
                skipped.append({"id": cid, "source": str(paths["video"]), "reason": str(err)})
    records = [c for c in scan_clips(out) if c.id in set(kept)]
    write_manifest(out, records, kind="real", audio_encoder={"name": OFFICIAL_ENCODER, "dim": int(
        records[0].extra["audio_dim"]) if records else None, "rate_hz": 50.0}, imported_from=[str(m) for m in metas])
    report = {"output": str(out), "inputs": len(kept) + len(skipped), "kept": len(kept), "skipped": len(skipped),
              "processed_now": len(kept) + len(skipped), "resumed": 0, "skipped_clips": skipped,
              "skipped_by_reason": {}, "kept_clips": kept}
    for s in skipped:
        report["skipped_by_reason"][s["reason"][:60]] = report["skipped_by_reason"].get(s["reason"][:60], 0) + 1
    write_json(out / "report.json", report)
    return report
