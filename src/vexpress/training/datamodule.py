"""``TalkingFaceDataModule``: the LightningDataModule of the training app (``conf/data/*.yaml``).

It composes :mod:`vexpress.data` (records, samples, latent cache) and :mod:`vexpress.synthetic` (the benchmark it
generates on first use), so it lives here, above both: neither of those packages imports the other's user.

Data comes either from a preprocessed folder (``root``: ``vexpress-preprocess`` output, an official HDTF-style
preparation converted by it, or any ``vexpress-synth`` set) or from the synthetic benchmark generated on first use
(``synthetic: {...}`` = :class:`~vexpress.synthetic.generate.SynthConfig` fields; cached by config hash under
``cache_dir``). ``num_frames`` and ``batch_size`` come from the stage config (``${stage.num_frames}``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import torch

from vexpress.errors import InputError

log = logging.getLogger("vexpress.data")


class TalkingFaceDataModule(L.LightningDataModule):
    """Train/val loaders of :class:`~vexpress.data.talking_face.TalkingFaceDataset` samples (batch keys:
    :mod:`vexpress.data.batch`).

    Args:
        root: dataset folder with ``manifest.json`` (mutually exclusive with ``synthetic``).
        synthetic: synthetic-benchmark config (dict of SynthConfig fields) to generate/reuse instead of ``root``.
        cache_dir: where generated synthetic sets are cached (default ``$VEXPRESS_CACHE_DIR`` or ``<repo>/.cache``).
        num_frames: frames per sample (``${stage.num_frames}``).
        batch_size: samples per batch (``${stage.batch_size}``).
        image_size, sample_rate, reference_margin, flip_prob, latent_downscale, num_pad, crop, lip_scale,
            kps_canvas: sample construction (see the dataset; generation must draw V-Kps with the same kps_canvas).
        train_split, val_split: manifest splits (``val_split=None``: no validation loader; a split that is absent
            from the manifest is skipped with a log line).
        samples_per_clip: training samples per clip and epoch.
        val_samples: fixed validation samples (keys 0..n-1, no flip), at most this many.
        num_workers, pin_memory, persistent_workers, prefetch_factor: DataLoader settings.
        seed: sample seed (same seed = same batches, whatever ``num_workers``).
        latent_cache: folder of a latent cache (:mod:`vexpress.data.cache`) or None.
        sample_latents: draw from the cached posterior (True, official) or use its mean.
        audio_dim: expected audio feature size; checked against the data (the model's ``audio_embedding_dim``
            interpolates this key).
        audio_encoder_info: description of the audio encoder (name/dim/rate), recorded in exports; checked when given.
        workers_for_synthesis: processes used to generate the synthetic set.
        captions: add each frame's caption (``caption``, :mod:`vexpress.data.captions`; synthetic data only), which
            a model with a caption encoder feeds to its cross-attention instead of the audio (the foundation).
        reference_frames, silence_ratio: which frames may serve as the reference (``any``, official, or ``silent``:
            closed-mouth frames found by the audio; see the dataset).
    """

    def __init__(self, root: str | None = None, synthetic: Mapping[str, Any] | None = None,
                 cache_dir: str | None = None, num_frames: int = 1, batch_size: int = 4, image_size: int = 64,
                 sample_rate: int = 1, reference_margin: int = 30, flip_prob: float = 0.5, latent_downscale: int = 8,
                 num_pad: int = 2, crop: str = "center", lip_scale: float = 2.0, kps_canvas: int | None = None,
                 train_split: str = "train",
                 val_split: str | None = None, samples_per_clip: int = 1, val_samples: int = 8,
                 num_workers: int = 0, pin_memory: bool = False, persistent_workers: bool = False,
                 prefetch_factor: int | None = None, drop_last: bool = True, seed: int = 0,
                 latent_cache: str | None = None, sample_latents: bool = True, audio_dim: int | None = None,
                 audio_encoder_info: Mapping[str, Any] | None = None, workers_for_synthesis: int = 2,
                 captions: bool = False, reference_frames: str = "any", silence_ratio: float = 0.1):
        super().__init__()
        if (root is None) == (synthetic is None):
            raise InputError("give the data module exactly one of root=<dataset folder> or synthetic={...}")
        self.root = Path(root).expanduser() if root else None
        self.synthetic = dict(synthetic) if synthetic is not None else None
        self.cache_dir = cache_dir
        self.num_frames = int(num_frames)
        self.batch_size = int(batch_size)
        self.dataset_kwargs = dict(image_size=int(image_size), sample_rate=int(sample_rate),
                                   reference_margin=int(reference_margin), latent_downscale=int(latent_downscale),
                                   num_pad=int(num_pad), crop=crop, lip_scale=float(lip_scale),
                                   kps_canvas=kps_canvas, captions=bool(captions),
                                   reference_frames=str(reference_frames), silence_ratio=float(silence_ratio))
        self.flip_prob = float(flip_prob)
        self.train_split, self.val_split = train_split, val_split
        self.samples_per_clip = int(samples_per_clip)
        self.val_samples = int(val_samples)
        self.loader_kwargs = dict(num_workers=int(num_workers), pin_memory=bool(pin_memory))
        if int(num_workers) > 0:
            self.loader_kwargs["persistent_workers"] = bool(persistent_workers)
            if prefetch_factor:
                self.loader_kwargs["prefetch_factor"] = int(prefetch_factor)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.latent_cache_dir = latent_cache
        self.sample_latents = bool(sample_latents)
        self.expected_audio_dim = audio_dim
        self.audio_encoder_info = dict(audio_encoder_info) if audio_encoder_info else None
        self.workers_for_synthesis = int(workers_for_synthesis)
        self.train_dataset = None
        self.val_dataset = None
        self._train_sampler = None

    # ---------------------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Generate the synthetic set once (rank 0); real data must already be preprocessed."""
        if self.synthetic is not None:
            self.root = self._synthetic_root()
        elif not (self.root / "manifest.json").is_file():
            raise InputError(f"{self.root} is not a vexpress dataset (no manifest.json); run vexpress-preprocess "
                             "first")

    def _synthetic_root(self) -> Path:
        from vexpress.synthetic.generate import ensure_synthetic_dataset

        return ensure_synthetic_dataset(self.synthetic, cache_dir=self.cache_dir, workers=self.workers_for_synthesis)

    def _records(self, split: str):
        from vexpress.data.records import load_manifest

        return load_manifest(self.root, split=split)

    def setup(self, stage: str | None = None) -> None:
        from vexpress.data.cache import LatentCache
        from vexpress.data.talking_face import TalkingFaceDataset

        if self.root is None or (self.synthetic is not None and not (self.root / "manifest.json").is_file()):
            self.root = self._synthetic_root()  # prepare_data is not called on every rank / in plain scripts
        cache = LatentCache(self.latent_cache_dir, sample=self.sample_latents) if self.latent_cache_dir else None
        if self.train_dataset is None:
            train = self._records(self.train_split)
            if not train:
                raise InputError(f"{self.root} has no clips in split {self.train_split!r}")
            self._check_audio(train[0])
            self.train_dataset = TalkingFaceDataset(train, self.num_frames, flip_prob=self.flip_prob,
                                                    samples_per_clip=self.samples_per_clip, seed=self.seed,
                                                    latent_cache=cache, **self.dataset_kwargs)
        if self.val_dataset is None and self.val_split:
            val = self._records(self.val_split)
            if val:
                self.val_dataset = TalkingFaceDataset(val, self.num_frames, flip_prob=0.0, seed=self.seed + 1,
                                                      latent_cache=cache, **self.dataset_kwargs)
            else:
                log.info("no clips in split %r: validation disabled", self.val_split)

    def _check_audio(self, record) -> None:
        dim = int(record.audio_features.shape[1])
        if self.expected_audio_dim is not None and int(self.expected_audio_dim) != dim:
            raise InputError(f"the data's audio features are {dim}-d ({record.audio_encoder}) but the config says "
                             f"audio_dim={self.expected_audio_dim}; set data.audio_dim={dim} or re-preprocess with "
                             "the matching audio encoder")
        info = self.audio_encoder_info
        if info and info.get("name") and str(info["name"]) != record.audio_encoder:
            raise InputError(f"the data's audio features come from {record.audio_encoder}, the config names "
                             f"{info['name']}; fix data.audio_encoder_info or re-preprocess")

    # ---------------------------------------------------------------------------------------------------------
    @property
    def audio_dim(self) -> int:
        self.setup()
        return int(self.train_dataset.records[0].audio_features.shape[1])

    def train_dataloader(self):
        from vexpress.data.talking_face import EpochSampler, worker_init

        self.setup("fit")
        if self.batch_size > len(self.train_dataset) and self.drop_last:
            raise InputError(f"batch_size {self.batch_size} is larger than the {len(self.train_dataset)} samples per "
                             "epoch; raise data.samples_per_clip or lower the batch size")
        self._train_sampler = EpochSampler(len(self.train_dataset), seed=self.seed, shuffle=True)
        return torch.utils.data.DataLoader(self.train_dataset, batch_size=self.batch_size,
                                           sampler=self._train_sampler, drop_last=self.drop_last,
                                           worker_init_fn=worker_init, **self.loader_kwargs)

    def val_dataloader(self):
        from vexpress.data.talking_face import EpochSampler, worker_init

        self.setup("validate")
        if self.val_dataset is None:
            return []
        n = min(self.val_samples, len(self.val_dataset)) if self.val_samples > 0 else len(self.val_dataset)
        subset = torch.utils.data.Subset(self.val_dataset, list(range(n)))
        kwargs = dict(self.loader_kwargs)
        kwargs.pop("persistent_workers", None) if kwargs.get("num_workers", 0) == 0 else None
        return torch.utils.data.DataLoader(subset, batch_size=min(self.batch_size, n),
                                           sampler=EpochSampler(n, shuffle=False), drop_last=False,
                                           worker_init_fn=worker_init, **kwargs)

    def state_dict(self) -> dict:
        return {"epoch": self._train_sampler.epoch if self._train_sampler is not None else 0}

    def load_state_dict(self, state: dict) -> None:
        if self._train_sampler is not None:
            self._train_sampler.set_epoch(int(state.get("epoch", 0)))
