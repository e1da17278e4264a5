"""The synthetic talking-face benchmark: generate clips (mp4 + exact ground truth) as a vexpress dataset.

Every clip is a function of ``(config, identity index, clip index)`` only, so the set is the same whatever the
number of worker processes. :func:`ensure_synthetic_dataset` keeps generated sets in a cache folder named by a
hash of the configuration: a changed configuration gives a new folder, an unchanged one is reused.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

#: Bump when the generator's output changes for the same configuration (invalidates caches).
#: 2: videos are written deterministically (``write_video`` without libx264's mb-tree), so a configuration gives the
#: same files on every machine; version-1 videos differed from run to run by a few codes in a few % of pixels.
GENERATOR_VERSION = 2


@dataclass
class SynthConfig:
    """What the synthetic set looks like (every field enters the cache key).

    Attributes:
        seed: master seed.
        num_identities: identities drawn; the last ``heldout_identities`` form the ``heldout`` split.
        heldout_identities: identities never seen in training (evaluation of generalisation).
        clips_per_identity: clips per identity (different audio and head motion, same appearance).
        seconds: clip length.
        fps: frame rate.
        size: frame side in pixels (square frames).
        supersample: anti-aliasing factor of the renderer.
        translate, scale_range, roll: head-motion amplitudes (fraction of the frame, relative scale, radians).
        audio_encoder: features stored with each clip (see :func:`vexpress.audio.build_audio_encoder`).
        crf, gop: H.264 quality and keyframe interval (small gop = cheap seeks).
    """

    seed: int = 0
    num_identities: int = 32
    heldout_identities: int = 8
    clips_per_identity: int = 2
    seconds: float = 4.0
    fps: float = 25.0
    size: int = 64
    supersample: int = 4
    translate: float = 0.05
    scale_range: float = 0.07
    roll: float = 0.14
    audio_encoder: dict = field(default_factory=lambda: {"name": "logmel"})
    crf: int = 16
    gop: int = 10

    def __post_init__(self) -> None:
        from vexpress.errors import InputError

        if self.num_identities < 1 or not 0 <= self.heldout_identities < self.num_identities:
            raise InputError("synthetic config: need num_identities >= 1 and 0 <= heldout_identities < num_identities")
        if self.clips_per_identity < 1 or self.seconds <= 0.5 or self.fps <= 0:
            raise InputError("synthetic config: need clips_per_identity >= 1, seconds > 0.5 and fps > 0")
        if self.size < 16 or self.size % 2:
            raise InputError(f"synthetic config: size must be an even number >= 16, got {self.size}")
        self.audio_encoder = dict(self.audio_encoder or {"name": "logmel"})

    @property
    def num_frames(self) -> int:
        return int(round(self.seconds * self.fps))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "SynthConfig":
        d = {k: v for k, v in dict(d or {}).items() if not str(k).startswith("_")}
        known = set(cls.__dataclass_fields__)
        from vexpress.errors import InputError

        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown synthetic config keys {unknown}; valid keys: {sorted(known)}")
        if "audio_encoder" in d and d["audio_encoder"] is not None:
            d["audio_encoder"] = dict(d["audio_encoder"])
        return cls(**d)

    def key(self) -> str:
        """Content hash of the configuration (+ generator version): the cache folder name."""
        d = self.to_dict()
        d["audio_encoder"] = encoder_identity(d.get("audio_encoder"))
        body = json.dumps({"v": GENERATOR_VERSION, **d}, sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


def encoder_identity(spec: Any) -> Any:
    """An audio encoder config as the data's cache key sees it: a local ``path`` is replaced by the hash of the
    folder's files, so the key follows the weights (a refitted encoder gives new data) and not where the checkout
    lives."""
    if not isinstance(spec, Mapping) or not spec.get("path"):
        return spec
    root = Path(str(spec["path"]))
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    if not files:
        return dict(spec)  # missing: building the encoder says so
    # every clip's metadata holds the key: hash the files once per content version (name, size, mtime)
    stamp = tuple((f.relative_to(root).as_posix(), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return {**{k: v for k, v in spec.items() if k != "path"}, "weights_sha256": _folder_digest(str(root), stamp)}


@functools.lru_cache(maxsize=8)
def _folder_digest(root: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    for rel, _, _ in stamp:
        digest.update(rel.encode())
        digest.update((Path(root) / rel).read_bytes())
    return digest.hexdigest()[:16]


def identity_ids(cfg: SynthConfig) -> list[tuple[int, str, str]]:
    """(index, identity id, split) for every identity."""
    n_train = cfg.num_identities - cfg.heldout_identities
    return [(i, f"synth{i:03d}", "train" if i < n_train else "heldout") for i in range(cfg.num_identities)]


def make_identity(cfg: SynthConfig, index: int):
    from vexpress.synthetic.face import sample_identity

    return sample_identity(np.random.default_rng([cfg.seed, index, 7919]), f"synth{index:03d}")


def clip_speech(cfg: SynthConfig, index: int, clip: int, identity: Any = None
                ) -> tuple[np.random.Generator, np.ndarray, np.ndarray, np.ndarray]:
    """The speech of one clip: ``(rng, waveform, voicing, vowel_weight)``
    (:func:`~vexpress.synthetic.speech.synthesize`), with the clip's random generator in the state
    :func:`generate_clip` continues from (head motion)."""
    from vexpress.synthetic.speech import plan_syllables, synthesize

    identity = identity if identity is not None else make_identity(cfg, index)
    rng = np.random.default_rng([cfg.seed, index, clip, 104729])
    duration = cfg.num_frames / cfg.fps
    syllables = plan_syllables(rng, duration)
    wave, voicing, vowel_weight = synthesize(syllables, duration, identity.f0, identity.formant_scale, rng)
    return rng, wave, voicing, vowel_weight


def generate_clip(cfg: SynthConfig, index: int, clip: int) -> dict:
    """Everything about one clip, in memory: frames, audio, ground truth (no files written)."""
    from vexpress.synthetic.face import (
        face_bbox,
        kps_from_pose,
        mouth_landmarks,
        pose_trajectory,
        render_background,
        render_frame,
    )
    from vexpress.synthetic.speech import SAMPLE_RATE, mouth_track

    identity = make_identity(cfg, index)
    t_frames = cfg.num_frames
    rng, wave, voicing, vowel_weight = clip_speech(cfg, index, clip, identity)
    gt_mouth, vowel = mouth_track(voicing, vowel_weight, t_frames, cfg.fps, SAMPLE_RATE)
    pose = pose_trajectory(rng, t_frames, cfg.fps, cfg.size, cfg.translate, cfg.scale_range, cfg.roll)
    bg = render_background(identity, cfg.size, cfg.supersample)
    frames = np.stack([render_frame(identity, pose[t], tuple(gt_mouth[t]), cfg.size, cfg.supersample, bg)
                       for t in range(t_frames)])
    return {
        "identity": identity, "frames": frames, "audio": wave, "gt_mouth": gt_mouth.astype(np.float32),
        "gt_vowel": vowel, "gt_pose": pose.astype(np.float32), "kps": kps_from_pose(pose),
        "mouth": mouth_landmarks(gt_mouth, pose), "bbox": face_bbox(identity, pose),
    }


def _write_one(args: tuple) -> dict:
    cfg_dict, root, index, identity_id, split, clip = args
    import torch

    from vexpress.audio import build_audio_encoder
    from vexpress.data.records import write_clip
    from vexpress.data.video import write_video
    from vexpress.utils.native import single_threaded_worker

    single_threaded_worker()

    cfg = SynthConfig.from_dict(cfg_dict)
    data = generate_clip(cfg, index, clip)
    encoder = build_audio_encoder(cfg.audio_encoder)
    audio = torch.from_numpy(data["audio"])
    feats = encoder.encode(audio)
    clip_id = f"{identity_id}_c{clip:02d}"
    t_frames = data["frames"].shape[0]
    tensors = {
        "bbox": torch.from_numpy(data["bbox"]), "kps": torch.from_numpy(data["kps"]),
        "mouth": torch.from_numpy(data["mouth"]), "valid": torch.ones(t_frames, dtype=torch.uint8),
        "audio": audio, "audio_features": feats, "gt_mouth": torch.from_numpy(data["gt_mouth"]),
        "gt_pose": torch.from_numpy(data["gt_pose"]), "gt_vowel": torch.from_numpy(data["gt_vowel"]),
    }
    meta = {"id": clip_id, "split": split, "identity": identity_id, "fps": cfg.fps, "num_frames": t_frames,
            "width": cfg.size, "height": cfg.size, "audio_encoder": encoder.name, "kind": "synthetic",
            "audio_dim": encoder.dim, "audio_rate_hz": encoder.rate_hz,
            "synthetic": {"identity": data["identity"].to_dict(), "clip": clip, "config_key": cfg.key()}}
    write_clip(root, meta, tensors, video_writer=lambda p: write_video(
        p, data["frames"], cfg.fps, audio=data["audio"], crf=cfg.crf, gop=cfg.gop))
    return meta


def _worker_setup(parent_pid: int) -> None:
    """A pool worker ends with its parent, and ends the clip it is writing cleanly on SIGTERM (``stop_pool``)."""
    from vexpress.utils.native import exit_on_sigterm, exit_with_parent

    exit_with_parent(parent_pid)
    exit_on_sigterm()


def generate_dataset(cfg: SynthConfig, out_dir: str | os.PathLike, workers: int = 2,
                     progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the whole set into ``out_dir`` (clip folders + manifest). Existing complete clips are kept."""
    from vexpress.audio import build_audio_encoder
    from vexpress.data.records import clean_partial, clip_dir, is_clip_done, read_clip, write_manifest
    from vexpress.utils.io import check_writable_folder

    out = check_writable_folder(out_dir, "synthetic dataset folder")  # one-line error for a file or read-only path
    clean_partial(out)
    jobs = []
    for index, identity_id, split in identity_ids(cfg):
        for clip in range(cfg.clips_per_identity):
            clip_id = f"{identity_id}_c{clip:02d}"
            if not is_clip_done(out, clip_id):
                jobs.append((cfg.to_dict(), str(out), index, identity_id, split, clip))
    total = cfg.num_identities * cfg.clips_per_identity
    done = total - len(jobs)
    if progress:
        progress(done, total)
    if jobs:
        if workers > 1 and len(jobs) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            from vexpress.utils.native import stop_pool

            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn"),
                                     initializer=_worker_setup, initargs=(os.getpid(),)) as ex:
                try:
                    futures = [ex.submit(_write_one, j) for j in jobs]
                    for fut in as_completed(futures):
                        fut.result()
                        done += 1
                        if progress:
                            progress(done, total)
                except BaseException:  # stopped or failed: do not wait for the queued clips
                    stop_pool(ex)
                    raise
        else:
            for j in jobs:
                _write_one(j)
                done += 1
                if progress:
                    progress(done, total)
    records = [read_clip(clip_dir(out, f"{iid}_c{c:02d}")) for _, iid, _ in identity_ids(cfg)
               for c in range(cfg.clips_per_identity)]
    enc = build_audio_encoder(cfg.audio_encoder)
    write_manifest(out, records, kind="synthetic", audio_encoder={"name": enc.name, "dim": enc.dim,
                   "rate_hz": enc.rate_hz}, splits={"train": "identities seen in training",
                   "heldout": "identities never seen in training"}, config=cfg.to_dict(), config_key=cfg.key(),
                   generator_version=GENERATOR_VERSION)
    return out


def default_cache_dir() -> Path:
    """``$VEXPRESS_CACHE_DIR/synthetic`` or ``<repo>/.cache/vexpress/synthetic`` (the training config's
    ``${paths.cache_dir}/synthetic``)."""
    env = os.environ.get("VEXPRESS_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "synthetic"
    from vexpress.utils.paths import REPO_ROOT

    return REPO_ROOT / ".cache" / "vexpress" / "synthetic"


def ensure_synthetic_dataset(cfg: SynthConfig | Mapping[str, Any] | None = None,
                             cache_dir: str | os.PathLike | None = None, workers: int = 2,
                             progress: Callable[[int, int], None] | None = None) -> Path:
    """The dataset folder for ``cfg``, generated on first use and then reused (content-addressed cache).

    Generation happens in a temporary folder renamed into place when complete, so an interrupted run never
    leaves a half set under the final name (its finished clips are reused by the next run). Jobs that ask for the
    same set at once take turns on a lock (:func:`~vexpress.utils.io.exclusive_lock`): one builds, the others wait
    and reuse it.
    """
    from vexpress.data.records import MANIFEST
    from vexpress.utils.io import check_writable_folder, exclusive_lock

    if not isinstance(cfg, SynthConfig):
        cfg = SynthConfig.from_dict(cfg)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    final = cache / cfg.key()
    if (final / MANIFEST).is_file():
        return final
    check_writable_folder(cache, "synthetic cache folder")  # a file or read-only path: one line, before the lock
    with exclusive_lock(cache / f".{cfg.key()}.lock", f"the synthetic set {final}"):
        if (final / MANIFEST).is_file():  # another job made it while this one waited
            return final
        work = cache / f".{cfg.key()}.building"  # one builder at a time: a killed one's clips are reused
        generate_dataset(cfg, work, workers=workers, progress=progress)
        os.replace(work, final)
    return final


def timed_generation(cfg: SynthConfig, workers: int = 2) -> tuple[Path, float, int]:
    """Generate into a fresh temporary folder; returns (folder, seconds, bytes). Used by the CLI's report."""
    tmp = Path(tempfile.mkdtemp(prefix="vexpress-synth-"))
    t0 = time.perf_counter()
    generate_dataset(cfg, tmp, workers=workers)
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    return tmp, seconds, size
