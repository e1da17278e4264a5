"""Optional cache of VAE latents (and audio features) in memory-mapped shards, so training reads tensors only.

Build it once per (dataset, VAE, image size, crop) with :func:`build_latent_cache`; pass the folder to the
DataModule (``latent_cache=DIR``). Layout::

    <dir>/index.json            settings + per clip: shard number, first row, frame count (+ audio rows)
    <dir>/latents_<k>.npy       (rows, 2, 4, h, w) float16: posterior mean and std of each frame
    <dir>/latents_flip_<k>.npy  the same for horizontally flipped frames (when built with flip=True)
    <dir>/audio_<k>.npy         (rows, D) float32 audio features (when built with an audio encoder)

Training draws ``latent = (mean + std * eps) * scaling_factor`` (the official ``latent_dist.sample()``), or the mean
with ``sample=False``. Shards are opened with ``numpy.load(mmap_mode="r")`` lazily in each worker.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from vexpress.errors import InputError

INDEX = "index.json"


class LatentCache:
    """Read side of the cache (picklable; shards are memory-mapped on first use in each process)."""

    def __init__(self, path: str | os.PathLike, sample: bool = True):
        self.path = Path(path)
        index = self.path / INDEX
        if not index.is_file():
            raise InputError(f"{self.path} is not a latent cache (no {INDEX}); build it with "
                             "vexpress.data.cache.build_latent_cache")
        self.index = json.loads(index.read_text())
        self.sample = bool(sample)
        self.scaling_factor = float(self.index["scaling_factor"])
        self._maps: dict[str, np.ndarray] = {}

    @property
    def image_size(self) -> int:
        return int(self.index["image_size"])

    @property
    def crop(self) -> str:
        return str(self.index["crop"])

    @property
    def has_flip(self) -> bool:
        return bool(self.index.get("flip", False))

    @property
    def has_audio(self) -> bool:
        return bool(self.index.get("audio_encoder"))

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"] = {}
        return state

    def _map(self, name: str) -> np.ndarray:
        if name not in self._maps:
            self._maps[name] = np.load(self.path / name, mmap_mode="r")
        return self._maps[name]

    def _entry(self, clip_id: str) -> dict:
        try:
            return self.index["clips"][clip_id]
        except KeyError as err:
            raise InputError(f"clip {clip_id} is not in the latent cache {self.path}; rebuild the cache for this "
                             "dataset") from err

    def latents(self, clip_id: str, frame_ids: Sequence[int], flip: bool = False,
                rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(first frame's latents (4, h, w), the others' (4, F, h, w))`` already x scaling factor."""
        e = self._entry(clip_id)
        if flip and not self.has_flip:
            raise InputError(f"the latent cache {self.path} has no flipped latents; rebuild with flip=True or set "
                             "flip_prob=0")
        arr = self._map(f"latents{'_flip' if flip else ''}_{e['shard']}.npy")
        rows = np.asarray(frame_ids, dtype=np.int64) + int(e["offset"])
        stats = torch.from_numpy(np.asarray(arr[rows], dtype=np.float32))  # (K, 2, 4, h, w)
        lat = stats[:, 0]
        if self.sample:
            g = rng if rng is not None else np.random.default_rng()
            lat = lat + stats[:, 1] * torch.from_numpy(g.standard_normal(lat.shape).astype(np.float32))
        lat = lat * self.scaling_factor
        return lat[0].contiguous(), lat[1:].permute(1, 0, 2, 3).contiguous()

    def audio(self, clip_id: str) -> torch.Tensor:
        e = self._entry(clip_id)
        if "audio_rows" not in e:
            raise InputError(f"the latent cache {self.path} holds no audio features")
        arr = self._map(f"audio_{e['shard']}.npy")
        a = int(e["audio_offset"])
        return torch.from_numpy(np.array(arr[a:a + int(e["audio_rows"])], dtype=np.float32))


def _encoder(vae: Any) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(B, 3, H, W) in [-1, 1] -> (mean, std) of the posterior, for a diffusers-style VAE or a callable."""
    if hasattr(vae, "encode"):
        def enc(x: torch.Tensor):
            out = vae.encode(x)
            dist = getattr(out, "latent_dist", out)
            return dist.mean, dist.std
        return enc
    return vae


@torch.no_grad()
def build_latent_cache(records: Sequence[Any], vae: Any, out_dir: str | os.PathLike, image_size: int,
                       crop: str = "center", flip: bool = True, scaling_factor: float = 0.18215,
                       batch_size: int = 16, shard_frames: int = 20000, audio_encoder: Any = None,
                       device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LatentCache:
    """Encode every frame of ``records`` once (one sequential decode per clip) into memory-mapped shards.

    ``vae``: a diffusers ``AutoencoderKL``-like module (``encode(x).latent_dist.mean/.std``) or a callable
    returning ``(mean, std)``. ``crop`` as in the dataset (``face`` uses the union of the clip's face boxes).
    ``audio_encoder``: also store its features of each clip's audio (otherwise the records' features are used).
    """
    from vexpress.data.talking_face import crop_box, crop_resize
    from vexpress.data.video import iter_frames
    from vexpress.utils.io import atomic_path, write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enc = _encoder(vae)
    if hasattr(vae, "to"):
        vae.to(device)
        if dtype is not None and getattr(vae, "dtype", dtype) != dtype:
            vae.to(dtype=dtype)  # diffusers warns about every dtype cast, even a no-op one
    index: dict[str, Any] = {"image_size": int(image_size), "crop": crop, "flip": bool(flip),
                             "scaling_factor": float(scaling_factor), "clips": {},
                             "audio_encoder": getattr(audio_encoder, "name", None)}
    shard, rows, flip_rows, audio_rows = 0, [], [], []
    n_rows = n_audio = 0

    def flush() -> None:
        nonlocal shard, rows, flip_rows, audio_rows, n_rows, n_audio
        if not rows:
            return
        for name, parts in (("latents", rows), ("latents_flip", flip_rows)):
            if parts:
                with atomic_path(out / f"{name}_{shard}.npy") as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, np.concatenate(parts))
        if audio_rows:
            with atomic_path(out / f"audio_{shard}.npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, np.concatenate(audio_rows))
        shard += 1
        rows, flip_rows, audio_rows, n_rows, n_audio = [], [], [], 0, 0

    def encode(frames: np.ndarray) -> np.ndarray:
        res = []
        for i in range(0, frames.shape[0], batch_size):
            x = torch.from_numpy(np.ascontiguousarray(frames[i:i + batch_size])).permute(0, 3, 1, 2)
            x = x.to(device, dtype).div(127.5).sub(1.0)
            mean, std = enc(x)
            res.append(torch.stack([mean, std], 1).float().cpu().numpy().astype(np.float16))
        return np.concatenate(res)

    for rec in records:
        bboxes = None
        if crop == "face":
            valid = rec.valid.numpy().astype(bool)
            bboxes = rec.bbox.numpy()[valid] if valid.any() else None
        box = crop_box(rec.width, rec.height, bboxes, crop)
        frames = crop_resize(np.stack(list(iter_frames(rec.video))), box, image_size)
        if frames.shape[0] < rec.num_frames:
            raise InputError(f"clip {rec.id}: decoded {frames.shape[0]} frames, record says {rec.num_frames}")
        frames = frames[: rec.num_frames]
        entry = {"shard": shard, "offset": n_rows, "frames": rec.num_frames}
        rows.append(encode(frames))
        if flip:
            flip_rows.append(encode(np.ascontiguousarray(frames[:, :, ::-1])))
        n_rows += rec.num_frames
        if audio_encoder is not None:
            feats = audio_encoder.encode(rec.audio).float().numpy()
            entry.update(audio_offset=n_audio, audio_rows=int(feats.shape[0]))
            audio_rows.append(feats)
            n_audio += feats.shape[0]
        index["clips"][rec.id] = entry
        rec.release()
        if n_rows >= shard_frames:
            flush()
    flush()
    write_json(out / INDEX, index)
    return LatentCache(out)
