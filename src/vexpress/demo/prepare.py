"""Data preparation shared by the demo and the foundation experiment: the synthetic set, the tiny VAE, the latent
cache. Each step is cached, so a rerun only redoes what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf

from vexpress.demo.phases import progress_bar
from vexpress.utils.io import atomic_dir


def ensure_data(data_cfg: Any) -> Path:
    from vexpress.synthetic import ensure_synthetic_dataset

    bar = progress_bar(0, "synthetic clips")

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        return ensure_synthetic_dataset(OmegaConf.to_container(data_cfg.synthetic, resolve=True),
                                        cache_dir=data_cfg.cache_dir, workers=int(data_cfg.workers_for_synthesis),
                                        progress=progress)
    finally:
        bar.close()


def evaluation_data(data_cfg: Any, heldout_data: Any = None) -> Path:
    """The dataset whose held-out split the evaluation scores: the training data's (``heldout_data`` None), or the
    synthetic set made by replacing some of the training set's synthetic fields with ``heldout_data`` (e.g. another
    seed: identities the training data does not hold; :file:`conf/demo.yaml` ``exploration``)."""
    if not heldout_data:
        return ensure_data(data_cfg)
    base = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True))
    return ensure_data(OmegaConf.merge(base, {"synthetic": OmegaConf.to_container(OmegaConf.create(heldout_data))}))


def load_frames(records: Sequence[Any]) -> torch.Tensor:
    """Every frame of ``records`` as (N, 3, H, W) in [-1, 1]."""
    from vexpress.data.video import read_all_frames

    frames = np.concatenate([read_all_frames(r.video)[: r.num_frames] for r in records])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def mouth_masks(records: Sequence[Any], scale: float = 1.5) -> torch.Tensor:
    """(N, 1, H, W) boxes around each frame's lip landmarks (scaled ``scale`` x), in frame order of
    :func:`load_frames`."""
    from vexpress.data.talking_face import box_mask, lip_boxes

    masks = []
    for r in records:
        boxes = lip_boxes(r.mouth.numpy()[: r.num_frames], scale)
        masks.append(np.stack([box_mask(b, int(r.height), int(r.width)) for b in boxes]))
    return torch.from_numpy(np.concatenate(masks))[:, None]


def foundation_vae(foundation: str | Path) -> tuple[Any, dict[str, Any]]:
    """The foundation's VAE and its identity: ``key`` for the latent cache is a digest of its encoder half (what the
    latents depend on: a rebuilt foundation gets new latents, a fine-tuned decoder keeps them), ``dir`` is the
    folder every export of the demo is decoded with."""
    from vexpress.models.weights import foundation_vae_dir, load_foundation_vae, vae_encoder_digest

    vae = load_foundation_vae(foundation)
    return vae, {"key": f"foundation-encoder-{vae_encoder_digest(vae)}", "source": str(foundation),
                 "dir": str(foundation_vae_dir(foundation))}


def fit_vae(vae_cfg: Mapping[str, Any], directory: Path, root: Path, train_records: Sequence[Any],
            latent_downscale: int) -> tuple[Any, dict[str, Any]]:
    """The tiny VAE fitted on the frames of ``train_records`` (mouth-weighted), cached in ``directory``."""
    from vexpress.training.vae import load_or_fit_tiny_vae

    vcfg = dict(vae_cfg)
    bar = progress_bar(int(vcfg["steps"]), "fit tiny VAE")

    def progress(step: int, total: int, loss: float) -> None:
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss:.4f}")

    try:
        return load_or_fit_tiny_vae(directory, lambda: load_frames(train_records), data_id=root.name,
                                    latent_downscale=latent_downscale, progress=progress,
                                    weights_fn=lambda: mouth_masks(train_records), **vcfg)
    finally:
        bar.close()


def ensure_latents(cfg: Any, root: Path, records: Sequence[Any], vae: Any, vae_info: Mapping[str, Any],
                   image_size: int, crop: str):
    from vexpress.data.cache import INDEX, LatentCache, build_latent_cache

    key = f"{root.name}-{vae_info.get('key', 'vae')}-{image_size}-{crop}-{int(bool(cfg.latent_cache.flip))}"
    path = Path(cfg.paths.cache_dir) / "latents" / key
    if (path / INDEX).is_file():
        return LatentCache(path)
    # a folder of its own while building: two jobs that start on the same cache (a multirun, study seeds run side by
    # side) both finish, and the first complete folder is the one kept
    with atomic_dir(path, replace=path.exists()) as tmp:  # an existing folder here has no index: incomplete, replace it
        build_latent_cache(records, vae, tmp, image_size=image_size, crop=crop, flip=bool(cfg.latent_cache.flip),
                           scaling_factor=float(vae.config.scaling_factor),
                           batch_size=int(cfg.latent_cache.batch_size))
    return LatentCache(path)
