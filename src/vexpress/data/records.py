"""Preprocessed datasets: one record per clip plus a ``manifest.json`` (same format for real and synthetic clips).

Layout of a dataset folder (documented for users in ``docs/data.md``)::

    <root>/manifest.json             dataset description + the list of clips
    <root>/clips/<id>/meta.json      the clip's scalar description (ClipRecord fields + ``extra``)
    <root>/clips/<id>/record.safetensors   per-frame tensors (below), read lazily (memory-mapped)
    <root>/clips/<id>/video.mp4      the frames (synthetic clips, or re-encoded real clips); real clips may
                                     instead point at their source file (``meta.json`` ``video``)

Tensors in ``record.safetensors`` (T = frames, (x, y) pixels of the video frame):

    bbox            (T, 4)   float32  face box x1, y1, x2, y2
    kps             (T, 3, 2) float32 V-Kps points [left-in-image eye, right-in-image eye, nose]
    mouth           (T, K, 2) float32 lip landmarks: K = 40 in mediapipe MOUTH_LANDMARKS order (20 outer, 20 inner)
                                      for our preprocessing and synthetic clips; K = 20 (insightface 106-point
                                      set [52:72]) for imported official preparations
    valid           (T,)     uint8    1 where exactly one face was found and the points above are measured
    audio           (S,)     float32  the clip's audio, mono 16 kHz
    audio_features  (N, D)   float32  features of the whole utterance by ``meta.audio_encoder``
    landmarks       (T, K, 2) float32 (real clips) mesh landmarks RECORD_LANDMARKS of vexpress.preprocessing.face
    gt_mouth        (T, 2)   float32  (synthetic) exact mouth opening and width, in [0, 1]
    gt_pose         (T, 4)   float32  (synthetic) exact head pose: centre x, centre y, scale (px), roll (rad)
    gt_vowel        (T,)     int64    (synthetic) vowel class sounding in the frame (-1 = silence)

Each clip folder is written to a temporary name and renamed into place, so a folder under ``clips/`` is always
complete; the manifest is rewritten atomically from the finished clips.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from vexpress.errors import InputError
from vexpress.utils.io import deferred_signals, forget_temporary, make_temporary

MANIFEST = "manifest.json"
CLIPS_DIR = "clips"
META = "meta.json"
TENSORS = "record.safetensors"
VIDEO = "video.mp4"
FORMAT = "vexpress-dataset"
VERSION = 1

#: Tensor keys every record has.
REQUIRED_KEYS = ("bbox", "kps", "mouth", "valid", "audio", "audio_features")


@dataclass
class ClipRecord:
    """One preprocessed clip. Scalars are attributes; per-frame tensors load lazily on first access.

    Attributes:
        id: clip id, unique in the dataset (also its folder name).
        split: ``train`` / ``val`` / ``test`` (synthetic: ``train`` or ``heldout`` by identity).
        identity: speaker / identity id (splits never share one).
        video: the video file (absolute).
        fps, num_frames, width, height: of the video (``num_frames`` = rows of the per-frame tensors).
        audio_encoder: name of the encoder that produced ``audio_features``.
        kind: ``real`` or ``synthetic``.
        dir: the clip folder.
        extra: anything else from ``meta.json`` (e.g. the synthetic identity's parameters, the source file).
    """

    id: str
    split: str
    identity: str
    video: Path
    fps: float
    num_frames: int
    width: int
    height: int
    audio_encoder: str
    kind: str
    dir: Path
    extra: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # -- tensors ---------------------------------------------------------------------------------------------
    @property
    def tensor_path(self) -> Path:
        return self.dir / TENSORS

    def keys(self) -> list[str]:
        from safetensors import safe_open

        with safe_open(str(self.tensor_path), framework="pt") as fh:
            return list(fh.keys())

    def has(self, key: str) -> bool:
        return key in self._cache or key in self.keys()

    def get(self, key: str) -> torch.Tensor:
        """One per-frame tensor (cached after the first read)."""
        if key not in self._cache:
            from safetensors import safe_open

            try:
                with safe_open(str(self.tensor_path), framework="pt") as fh:
                    if key not in fh.keys():
                        raise InputError(f"clip {self.id} has no '{key}' tensor in {self.tensor_path}; "
                                         "re-run the preprocessing that makes it")
                    self._cache[key] = fh.get_tensor(key)
            except InputError:
                raise
            except Exception as err:  # noqa: BLE001
                raise InputError(f"cannot read {self.tensor_path}: {err} (delete the clip folder and re-run "
                                 "preprocessing)") from err
        return self._cache[key]

    def release(self) -> None:
        """Drop cached tensors (datasets call it to keep worker memory flat)."""
        self._cache.clear()

    bbox = property(lambda self: self.get("bbox"))
    kps = property(lambda self: self.get("kps"))
    mouth = property(lambda self: self.get("mouth"))
    valid = property(lambda self: self.get("valid").bool())
    audio = property(lambda self: self.get("audio"))
    audio_features = property(lambda self: self.get("audio_features"))
    landmarks = property(lambda self: self.get("landmarks"))
    gt_mouth = property(lambda self: self.get("gt_mouth"))
    gt_pose = property(lambda self: self.get("gt_pose"))
    gt_vowel = property(lambda self: self.get("gt_vowel"))

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps if self.fps > 0 else 0.0

    def reader(self):
        """A :class:`vexpress.data.video.VideoReader` over this clip's video (seek decoding)."""
        from vexpress.data.video import VideoReader

        return VideoReader(self.video)

    def frames(self, indices: Iterable[int]):
        """(K, H, W, 3) uint8 frames (opens a reader each call; datasets keep their own readers)."""
        with self.reader() as r:
            return r.get(list(indices))

    def to_meta(self) -> dict:
        return {"id": self.id, "split": self.split, "identity": self.identity, "video": _rel_or_abs(self.video,
                self.dir), "fps": self.fps, "num_frames": self.num_frames, "width": self.width, "height": self.height,
                "audio_encoder": self.audio_encoder, "kind": self.kind, **self.extra}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state


def _rel_or_abs(path: Path, base: Path) -> str:
    """Files inside the clip folder are stored relative to it (the dataset can be moved); others absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path(base).resolve()))
    except ValueError:
        return str(p)


_CORE = {"id", "split", "identity", "video", "fps", "num_frames", "width", "height", "audio_encoder", "kind"}


def read_clip(clip_dir: str | os.PathLike) -> ClipRecord:
    """Read one clip folder's ``meta.json`` (tensors stay on disk until used)."""
    clip_dir = Path(clip_dir)
    meta_path = clip_dir / META
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError as err:
        raise InputError(f"{clip_dir} is not a clip record (no {META}); re-run preprocessing") from err
    except json.JSONDecodeError as err:
        raise InputError(f"{meta_path} is not valid JSON ({err.msg}); delete the clip folder and re-run") from err
    missing = sorted(k for k in _CORE if k not in meta)
    if missing:
        raise InputError(f"{meta_path} lacks {', '.join(missing)}; delete the clip folder and re-run preprocessing")
    video = Path(meta["video"])
    if not video.is_absolute():
        video = (clip_dir / video).resolve()
    return ClipRecord(id=str(meta["id"]), split=str(meta["split"]), identity=str(meta["identity"]), video=video,
                      fps=float(meta["fps"]), num_frames=int(meta["num_frames"]), width=int(meta["width"]),
                      height=int(meta["height"]), audio_encoder=str(meta["audio_encoder"]), kind=str(meta["kind"]),
                      dir=clip_dir, extra={k: v for k, v in meta.items() if k not in _CORE})


def load_manifest(root: str | os.PathLike, split: str | Iterable[str] | None = None) -> list[ClipRecord]:
    """The clips of a dataset folder (optionally only some splits), in manifest order; tensors load lazily."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise InputError(f"{root} is not a vexpress dataset (no {MANIFEST}); run vexpress-preprocess or "
                         "vexpress-synth to make one")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err.msg}); re-run the tool that wrote it") from err
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path} is not a vexpress dataset manifest (format={manifest.get('format')!r})")
    splits = {split} if isinstance(split, str) else (set(split) if split is not None else None)
    records = []
    for entry in manifest.get("clips", []):
        if splits is not None and entry.get("split") not in splits:
            continue
        records.append(read_clip(root / entry.get("dir", f"{CLIPS_DIR}/{entry['id']}")))
    return records


def read_manifest(root: str | os.PathLike) -> dict:
    """The raw manifest dict (dataset-level fields: kind, audio_encoder, config, ...)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise InputError(f"{root} is not a vexpress dataset (no {MANIFEST})")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------------------------------------
# Writing


def clip_dir(root: str | os.PathLike, clip_id: str) -> Path:
    return Path(root) / CLIPS_DIR / clip_id


def is_clip_done(root: str | os.PathLike, clip_id: str) -> bool:
    d = clip_dir(root, clip_id)
    return (d / META).is_file() and (d / TENSORS).is_file()


def check_record_tensors(tensors: Mapping[str, torch.Tensor], num_frames: int, what: str = "record") -> None:
    """Validate shapes before anything is written (raises :class:`InputError`)."""
    missing = [k for k in REQUIRED_KEYS if k not in tensors]
    if missing:
        raise InputError(f"{what} lacks {', '.join(missing)}")
    shapes = {"bbox": (4,), "kps": (3, 2), "valid": (), "gt_mouth": (2,), "gt_pose": (4,)}
    for key, tail in shapes.items():
        if key in tensors:
            t = tensors[key]
            if tuple(t.shape) != (num_frames, *tail):
                raise InputError(f"{what}: '{key}' has shape {tuple(t.shape)}, expected {(num_frames, *tail)}")
    m = tensors["mouth"]
    if m.ndim != 3 or m.shape[0] != num_frames or m.shape[2] != 2 or m.shape[1] < 2:
        raise InputError(f"{what}: 'mouth' has shape {tuple(m.shape)}, expected ({num_frames}, K >= 2, 2)")
    if "landmarks" in tensors and (tensors["landmarks"].ndim != 3 or tensors["landmarks"].shape[0] != num_frames):
        raise InputError(f"{what}: 'landmarks' must be (T, K, 2) with T={num_frames}")
    if tensors["audio"].ndim != 1 or tensors["audio"].numel() == 0:
        raise InputError(f"{what}: 'audio' must be a non-empty mono waveform")
    if tensors["audio_features"].ndim != 2 or tensors["audio_features"].shape[0] == 0:
        raise InputError(f"{what}: 'audio_features' must be (N >= 1, D)")


def write_clip(root: str | os.PathLike, meta: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
               video_writer=None) -> ClipRecord:
    """Write one clip folder atomically: everything goes to a temporary folder that is renamed into place.

    ``meta`` holds at least the :class:`ClipRecord` fields (``video`` may be omitted when ``video_writer`` is
    given: it is called with the temporary path of ``video.mp4`` and must write the video there). Any existing
    folder of the same id is replaced only once the new one is complete.
    """
    from safetensors.torch import save_file

    root = Path(root)
    clip_id = str(meta["id"])
    final = clip_dir(root, clip_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    num_frames = int(meta["num_frames"])
    check_record_tensors(tensors, num_frames, f"clip {clip_id}")
    tmp = None
    try:
        with deferred_signals():  # a stop signal lands after ``tmp`` is set, so the clean-up below removes it
            tmp = make_temporary(final.parent, clip_id, folder=True)
        meta = dict(meta)
        if video_writer is not None:
            video_writer(tmp / VIDEO)
            meta["video"] = VIDEO
        if "video" not in meta:
            raise InputError(f"clip {clip_id}: no video given")
        clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(clean, str(tmp / TENSORS), metadata={"format": FORMAT, "audio_encoder": str(meta["audio_encoder"])})
        (tmp / META).write_text(json.dumps(meta, indent=2, default=_json_default) + "\n")
        _publish_modes(tmp)
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{clip_id}.", suffix=".old", dir=final.parent))
            os.replace(final, trash / "x")
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        forget_temporary(tmp)
    return read_clip(final)


def _publish_modes(folder: Path) -> None:
    """Temporary files/folders are private (0600/0700); give the finished record the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for p in folder.iterdir():
        if p.is_file():
            os.chmod(p, 0o666 & ~umask)


def _json_default(obj: Any) -> Any:
    from vexpress.utils.io import _json_default as jd

    return jd(obj)


def clean_partial(root: str | os.PathLike) -> int:
    """Remove leftovers of interrupted writes (``.*.tmp-part`` / ``.*.old`` folders); returns how many."""
    d = Path(root) / CLIPS_DIR
    n = 0
    if d.is_dir():
        for p in d.iterdir():
            if p.name.startswith(".") and (p.name.endswith(".tmp-part") or p.name.endswith(".old")):
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    return n


def write_manifest(root: str | os.PathLike, clips: Iterable[ClipRecord | Mapping[str, Any]], **fields: Any) -> Path:
    """Atomically (re)write ``manifest.json`` listing ``clips`` (records or their meta dicts) plus ``fields``."""
    from vexpress.utils.io import write_json

    root = Path(root)
    entries = []
    for c in clips:
        if isinstance(c, ClipRecord):
            c = {"id": c.id, "split": c.split, "identity": c.identity, "num_frames": c.num_frames, "fps": c.fps,
                 "width": c.width, "height": c.height}
        entries.append({"id": c["id"], "dir": f"{CLIPS_DIR}/{c['id']}", "split": c["split"],
                        "identity": c["identity"], "num_frames": int(c["num_frames"]), "fps": float(c["fps"]),
                        "width": int(c["width"]), "height": int(c["height"])})
    body = {"format": FORMAT, "version": VERSION, **fields, "num_clips": len(entries), "clips": entries}
    write_json(root / MANIFEST, body)
    return root / MANIFEST


def scan_clips(root: str | os.PathLike) -> list[ClipRecord]:
    """Every complete clip folder under ``root/clips`` (sorted by id), whether or not the manifest lists it."""
    d = Path(root) / CLIPS_DIR
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.iterdir()):
        if p.is_dir() and not p.name.startswith(".") and (p / META).is_file() and (p / TENSORS).is_file():
            out.append(read_clip(p))
    return out
