"""Training samples from preprocessed clips, built as the official ``TalkingFaceVideo`` (spec §3.3).

One sample = ``num_frames`` target frames ``sample_rate`` apart (``linspace`` over a window of
``(num_frames - 1) * sample_rate + 1`` frames at a uniform start), a reference frame drawn uniformly from the frames
outside ``[first - margin, last + margin)``, all cropped/resized alike, the V-Kps drawing of every target frame (drawn
at the output size, as the official 512x512 frames and the generation pipeline: :mod:`vexpress.kps.render`), the lip
box x2 at latent resolution, the audio
windows of the targets, and with probability ``flip_prob`` a horizontal flip of everything (the V-Kps red and green
channels are swapped after the flip so the left-in-image eye stays red).

Only the needed frames are decoded (:class:`~vexpress.data.video.VideoReader` seeks), or with a latent cache no
frame at all. Every random choice of sample ``key`` comes from ``numpy.random.default_rng([seed, key])``, so
samples do not depend on workers, their number or their order; :class:`EpochSampler` hands out new keys every
epoch.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from vexpress.audio.windows import audio_windows, silent_frames
from vexpress.data.captions import frame_captions
from vexpress.data.video import read_all_frames
from vexpress.errors import InputError
from vexpress.kps.draw import flip_kps_image_channels
from vexpress.kps.render import draw_kps_images


def crop_box(width: int, height: int, bboxes: np.ndarray | None = None, mode: str = "center",
             face_scale: float = 1.8) -> tuple[float, float, float]:
    """Square crop ``(x0, y0, side)`` in source pixels.

    ``center``: the largest centred square (what the official RandomResizedCrop with ratio ~1 does on landscape
    frames; the whole frame for square ones). ``face``: a square ``face_scale`` times the union of the given face
    boxes (the dataset passes all of the clip's boxes, so a clip has one crop), centred on it and shifted to stay
    inside the frame. ``none``: the whole frame (must be square).
    """
    if mode == "none":
        if width != height:
            raise InputError(f"crop=none needs square frames, got {width}x{height}; use crop=center or crop=face")
        return 0.0, 0.0, float(width)
    if mode == "center" or bboxes is None or len(bboxes) == 0:
        side = float(min(width, height))
        return (width - side) / 2.0, (height - side) / 2.0, side
    if mode != "face":
        raise InputError(f"unknown crop mode {mode!r}; use center, face or none")
    b = np.asarray(bboxes, dtype=np.float64)
    x1, y1, x2, y2 = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
    side = min(float(min(width, height)), max(x2 - x1, y2 - y1) * face_scale)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    x0 = min(max(0.0, cx - side / 2.0), width - side)
    y0 = min(max(0.0, cy - side / 2.0), height - side)
    return x0, y0, side


def crop_resize(frames: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    """(K, H, W, 3) uint8 -> (K, size, size, 3): crop the square box and resize it (area filter when shrinking).

    Continuous coordinates (pixel ``i`` spans ``[i, i+1)``) map as ``(x - x0) * size / side``, the same map as
    :func:`transform_points`, also for boxes at fractional positions.
    """
    import cv2

    x0, y0, side = box
    k = size / side
    h, w = frames.shape[1:3]
    out = np.empty((frames.shape[0], size, size, 3), dtype=np.uint8)
    integral = all(abs(v - round(v)) < 1e-6 for v in (x0, y0, side))
    for i, f in enumerate(frames):
        if integral:
            crop = f[int(round(y0)):int(round(y0 + side)), int(round(x0)):int(round(x0 + side))]
            if crop.shape[:2] == (size, size):
                out[i] = crop
            else:
                interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
                out[i] = cv2.resize(crop, (size, size), interpolation=interp)
            continue
        src, sx, sy = f, 1.0, 1.0
        if k < 1.0:  # shrink with the area filter first, then a sub-pixel warp
            src = cv2.resize(f, (max(1, int(round(w * k))), max(1, int(round(h * k)))), interpolation=cv2.INTER_AREA)
            sx, sy = src.shape[1] / w, src.shape[0] / h
        mat = np.array([[k / sx, 0.0, 0.5 * k / sx - x0 * k - 0.5],
                        [0.0, k / sy, 0.5 * k / sy - y0 * k - 0.5]], dtype=np.float64)
        out[i] = cv2.warpAffine(src, mat, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


def transform_points(points: np.ndarray, box: tuple[float, float, float], size: int) -> np.ndarray:
    x0, y0, side = box
    return (np.asarray(points, dtype=np.float64) - np.array([x0, y0])) * (size / side)


def box_mask(box: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h, w) float32 coverage of an xyxy box on a pixel grid (fractional at the edges)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    xs = np.clip(np.minimum(np.arange(w) + 1.0, x2) - np.maximum(np.arange(w, dtype=np.float64), x1), 0, 1)
    ys = np.clip(np.minimum(np.arange(h) + 1.0, y2) - np.maximum(np.arange(h, dtype=np.float64), y1), 0, 1)
    return (ys[:, None] * xs[None, :]).astype(np.float32)


def lip_boxes(mouth: np.ndarray, scale: float = 2.0) -> np.ndarray:
    """(F, K, 2) lip points -> (F, 4) xyxy boxes scaled ``scale`` times around their centres (official: 2)."""
    lo, hi = mouth.min(1), mouth.max(1)
    c, half = (lo + hi) / 2.0, (hi - lo) / 2.0 * scale
    return np.concatenate([c - half, c + half], axis=1)


class TalkingFaceDataset(torch.utils.data.Dataset):
    """V-Express training samples over :class:`~vexpress.data.records.ClipRecord`s.

    Args:
        records: the clips (e.g. ``load_manifest(root, split="train")``).
        num_frames: frames per sample (stage config: 1, 20, 8 officially).
        image_size: output side in pixels (square).
        sample_rate: step between target frames.
        reference_margin: the reference is drawn outside ``[first - margin, last + margin)`` (official 30 at 30 fps).
        flip_prob: horizontal flip probability (official 0.5).
        latent_downscale: lip masks are ``image_size // latent_downscale`` square.
        num_pad: audio context ``p`` (frames i-p..i+p).
        crop: ``center`` | ``face`` | ``none`` (see :func:`crop_box`).
        lip_scale: the lip box is enlarged this much around its centre (official 2).
        samples_per_clip: dataset length = clips x this (each epoch sees every clip this often).
        seed: base seed of every sample's random choices.
        latent_cache: a :class:`~vexpress.data.cache.LatentCache` (then images are not decoded unless
            ``return_images``); its image size and crop must match.
        return_images: with a latent cache, also decode and return the images.
        max_open_videos: readers kept open per worker.
        kps_canvas: V-Kps drawing canvas (:mod:`vexpress.kps.render`): None = draw at the output size, as the
            generation pipeline does (official at 512); 512 = official proportions at any size.
        captions: also return ``caption`` (F, 3), the frames' captions (:func:`vexpress.data.captions.frame_captions`;
            synthetic records only).
        reference_frames: ``any`` (official): the reference is any frame outside the margin; ``silent``: only those
            whose audio is silent (:func:`vexpress.audio.windows.silent_frames` at ``silence_ratio``), i.e. a
            closed-mouth reference like the portrait a user gives; when a sample has no silent frame outside the
            margin it falls back to ``any``.
        silence_ratio: see ``reference_frames``.
    """

    def __init__(self, records: Sequence[Any], num_frames: int, image_size: int = 64, sample_rate: int = 1,
                 reference_margin: int = 30, flip_prob: float = 0.5, latent_downscale: int = 8, num_pad: int = 2,
                 crop: str = "center", lip_scale: float = 2.0, samples_per_clip: int = 1, seed: int = 0,
                 latent_cache: Any = None, return_images: bool = False, max_open_videos: int = 16,
                 kps_canvas: int | None = None, captions: bool = False, reference_frames: str = "any",
                 silence_ratio: float = 0.1):
        if not records:
            raise InputError("the dataset has no clips; check the data root and split (vexpress-preprocess writes "
                             "them, vexpress-synth makes the synthetic set)")
        if num_frames < 1 or sample_rate < 1 or image_size < 8:
            raise InputError("need num_frames >= 1, sample_rate >= 1 and image_size >= 8")
        if image_size % latent_downscale:
            raise InputError(f"image_size {image_size} is not a multiple of latent_downscale {latent_downscale}")
        self.records = list(records)
        self.num_frames = int(num_frames)
        self.image_size = int(image_size)
        self.sample_rate = int(sample_rate)
        self.reference_margin = int(reference_margin)
        self.flip_prob = float(flip_prob)
        self.latent_downscale = int(latent_downscale)
        self.num_pad = int(num_pad)
        self.crop = crop
        self.lip_scale = float(lip_scale)
        self.samples_per_clip = max(1, int(samples_per_clip))
        self.seed = int(seed)
        self.latent_cache = latent_cache
        self.return_images = bool(return_images)
        self.max_open_videos = int(max_open_videos)
        self.kps_canvas = int(kps_canvas) if kps_canvas else None
        self.captions = bool(captions)
        if reference_frames not in ("any", "silent"):
            raise InputError(f"reference_frames must be 'any' or 'silent', got {reference_frames!r}")
        self.reference_frames = reference_frames
        self.silence_ratio = float(silence_ratio)
        self._silent_cache: dict[int, np.ndarray] = {}
        self._readers: OrderedDict = OrderedDict()
        self._valid_cache: dict[int, np.ndarray] = {}
        span = (self.num_frames - 1) * self.sample_rate + 1
        usable = [r for r in self.records if r.num_frames >= self.num_frames]
        if not usable:
            raise InputError(f"no clip has {self.num_frames} frames (longest: "
                             f"{max(r.num_frames for r in self.records)}); lower num_frames")
        self._span = span
        if latent_cache is not None:
            if latent_cache.image_size != self.image_size or latent_cache.crop != self.crop:
                raise InputError(f"latent cache {latent_cache.path} was built for {latent_cache.image_size}px "
                                 f"crop={latent_cache.crop}, not {self.image_size}px crop={self.crop}; rebuild it")
            if self.flip_prob > 0 and not latent_cache.has_flip:
                raise InputError(f"latent cache {latent_cache.path} has no flipped latents; rebuild with flip=True "
                                 "or set flip_prob=0")

    def __len__(self) -> int:
        return len(self.records) * self.samples_per_clip

    # -- planning (pure, cheap) ------------------------------------------------------------------------------
    def _valid(self, ci: int) -> np.ndarray:
        if ci not in self._valid_cache:
            rec = self.records[ci]
            try:
                v = rec.valid.numpy().astype(bool)
            except Exception:  # noqa: BLE001 - records without a valid flag: all frames usable
                v = np.ones(rec.num_frames, dtype=bool)
            self._valid_cache[ci] = v
        return self._valid_cache[ci]

    def _silent(self, ci: int) -> np.ndarray:
        if ci not in self._silent_cache:
            rec = self.records[ci]
            self._silent_cache[ci] = silent_frames(rec.audio, rec.num_frames, float(rec.fps),
                                                   ratio=self.silence_ratio).numpy()
        return self._silent_cache[ci]

    def plan(self, key: int) -> dict:
        """The random choices of sample ``key``: clip, target frames, reference frame, flip (no decoding)."""
        rng = np.random.default_rng([self.seed, int(key)])
        n = len(self.records)
        first = int(key) % n
        for attempt in range(n):
            ci = (first + attempt) % n
            rec = self.records[ci]
            t = rec.num_frames
            if t < self.num_frames:
                continue  # official: skip to the next clip
            clip_len = min(t, self._span)
            valid = self._valid(ci)
            starts = np.arange(0, t - clip_len + 1)
            if not valid.all():
                ok = np.convolve(valid.astype(int), np.ones(clip_len, dtype=int), "valid") == clip_len
                starts = starts[ok[: starts.size]]
            if starts.size == 0:
                continue
            start = int(rng.choice(starts))
            ids = np.linspace(start, start + clip_len - 1, self.num_frames).astype(np.int64)
            lo, hi = int(ids.min()) - self.reference_margin, int(ids.max()) + self.reference_margin
            frames = np.arange(t)
            cand = frames[((frames < lo) | (frames >= hi)) & valid]
            if cand.size == 0:
                # no frame outside the margin: the official loader skips the clip; when every clip is that short
                # we fall back to the valid frame farthest from the targets (rather than failing)
                if attempt < n - 1:
                    continue
                gap = np.where(frames < ids.min(), ids.min() - frames, np.maximum(frames - ids.max(), 0))
                if gap[valid].max() == 0:  # the targets cover the clip: the frame farthest from their centre
                    gap = np.abs(frames - ids.mean())
                cand = np.array([int(np.argmax(np.where(valid, gap, -1)))])
            if self.reference_frames == "silent":
                quiet = cand[self._silent(ci)[cand]]
                cand = quiet if quiet.size else cand
            ref = int(rng.choice(cand))
            flip = bool(rng.random() < self.flip_prob)
            return {"clip": ci, "frames": ids, "reference": ref, "flip": flip}
        raise InputError(f"no clip can provide {self.num_frames} valid frames; lower num_frames or check the data")

    # -- decoding --------------------------------------------------------------------------------------------
    def _reader(self, ci: int):
        if ci in self._readers:
            self._readers.move_to_end(ci)
            return self._readers[ci]
        reader = self.records[ci].reader()
        self._readers[ci] = reader
        while len(self._readers) > self.max_open_videos:
            _, old = self._readers.popitem(last=False)
            old.close()
        return reader

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_readers"] = OrderedDict()
        return state

    def _box(self, ci: int) -> tuple[float, float, float]:
        """The clip's crop (``face``: one square around the union of all its valid face boxes)."""
        rec = self.records[ci]
        bboxes = rec.bbox.numpy()[self._valid(ci)] if self.crop == "face" else None
        return crop_box(rec.width, rec.height, bboxes, self.crop)

    def __getitem__(self, key: int) -> dict:
        if torch.utils.data.get_worker_info() is not None and _CONFIGURED.get("pid") != os.getpid():
            worker_init(0)  # OpenCV's thread pool deadlocks in forked workers: one thread per worker
        p = self.plan(int(key))
        rec = self.records[p["clip"]]
        ids, ref, flip = p["frames"], p["reference"], p["flip"]
        size, lat = self.image_size, self.image_size // self.latent_downscale
        all_ids = np.concatenate([[ref], ids])
        box = self._box(p["clip"])

        sample: dict[str, Any] = {"clip_id": rec.id, "frame_indices": torch.from_numpy(ids.copy()),
                                  "reference_index": torch.tensor(ref, dtype=torch.int64),
                                  "flipped": torch.tensor(flip)}
        need_images = self.latent_cache is None or self.return_images
        if need_images:
            frames = self._reader(p["clip"]).get(all_ids.tolist())
            if frames.shape[1] != rec.height or frames.shape[2] != rec.width:
                raise InputError(f"clip {rec.id}: video is {frames.shape[2]}x{frames.shape[1]} but its record says "
                                 f"{rec.width}x{rec.height}; re-run preprocessing")
            frames = crop_resize(frames, box, size)
            if flip:
                frames = frames[:, :, ::-1]
            img = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)
            sample["reference_image"] = img[:, 0].contiguous()
            sample["target_images"] = img[:, 1:].contiguous()
        if self.latent_cache is not None:
            ref_lat, tgt_lat = self.latent_cache.latents(rec.id, all_ids, flip, np.random.default_rng(
                [self.seed, int(key), 17]))
            sample["reference_latents"] = ref_lat
            sample["target_latents"] = tgt_lat

        kps = transform_points(rec.kps.numpy()[ids], box, size)
        kimg = draw_kps_images(kps, size, self.kps_canvas)
        mouth = transform_points(rec.mouth.numpy()[ids], box, size) * (lat / size)
        masks = np.stack([box_mask(b, lat, lat) for b in lip_boxes(mouth, self.lip_scale)])
        lmask = torch.from_numpy(masks)[None]
        if flip:
            kimg = flip_kps_image_channels(kimg.flip(-1), channel_dim=0)
            lmask = lmask.flip(-1)
        sample["kps_images"] = kimg.contiguous()
        sample["lip_masks"] = lmask.contiguous()
        feats = self.latent_cache.audio(rec.id) if self.latent_cache is not None and \
            self.latent_cache.has_audio else rec.audio_features
        windows = audio_windows(feats.float(), rec.num_frames, self.num_pad)
        sample["audio_windows"] = windows[torch.from_numpy(ids)].contiguous()
        if self.captions:
            sample["caption"] = torch.from_numpy(frame_captions(rec, ids))
        return sample


class EpochSampler(torch.utils.data.Sampler):
    """Keys ``epoch * N + perm_epoch(N)``: a fresh, seeded shuffle and fresh sample choices every epoch.

    Lightning calls :meth:`set_epoch` before each epoch (also when the DataLoader workers are persistent: the
    epoch travels inside the keys). ``shuffle=False`` gives keys ``0..N-1`` every epoch (validation).
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True):
        self.length = int(length)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.length))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        base = self.epoch * self.length
        return iter((base + torch.randperm(self.length, generator=g)).tolist())


_CONFIGURED: dict = {}


def worker_init(worker_id: int) -> None:
    """Each loader worker decodes with one thread (the workers are the parallelism)."""
    _CONFIGURED["pid"] = os.getpid()
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except Exception:  # noqa: BLE001
        pass


def naive_sample(dataset: TalkingFaceDataset, key: int) -> dict:
    """The official loading strategy for comparison: decode the *whole* clip, then pick the sample's frames.

    Returns the same tensors as ``dataset[key]`` (images only; used by ``benchmarks/bench_dataloader.py``).
    """
    p = dataset.plan(int(key))
    rec = dataset.records[p["clip"]]
    frames = read_all_frames(rec.video)
    all_ids = np.concatenate([[p["reference"]], p["frames"]])
    box = dataset._box(p["clip"])
    sel = crop_resize(frames[all_ids], box, dataset.image_size)
    if p["flip"]:
        sel = sel[:, :, ::-1]
    img = torch.from_numpy(np.ascontiguousarray(sel)).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)
    return {"reference_image": img[:, 0], "target_images": img[:, 1:]}


def num_batches(length: int, batch_size: int, drop_last: bool) -> int:
    return length // batch_size if drop_last else math.ceil(length / batch_size)
