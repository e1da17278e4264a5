"""Random batches in the training batch format (vexpress.data.batch) for the training/callback tests.

The tests build their data directly so that they exercise the training code alone; the data engineer's
DataModule has its own tests. Sizes are tiny: 32x32 images, latents 8x8 (downscale 4), 16-d audio features.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import Dataset

from vexpress.training.resumable import ResumableLoader

AUDIO_DIM = 16
SIZE = 32
DOWNSCALE = 4


class RandomClips(Dataset):
    """Deterministic random clips; with ``latents`` the batch carries cached latents, else images."""

    def __init__(self, n: int = 16, num_frames: int = 2, size: int = SIZE, latent_downscale: int = DOWNSCALE,
                 audio_dim: int = AUDIO_DIM, seed: int = 0, latents: bool = True):
        self.n, self.f, self.size, self.ds, self.d, self.seed, self.latents = (
            n, num_frames, size, latent_downscale, audio_dim, seed, latents)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 100003 + i)
        h = self.size // self.ds
        f = self.f
        item = {
            "kps_images": torch.rand(3, f, self.size, self.size, generator=g),
            "audio_windows": torch.randn(f, 10, self.d, generator=g),
            "lip_masks": torch.zeros(1, f, h, h),
            "clip_id": f"clip{i:03d}",
        }
        item["lip_masks"][..., h // 2:, h // 4: 3 * h // 4] = 1.0
        if self.latents:
            item["target_latents"] = torch.randn(4, f, h, h, generator=g)
            item["reference_latents"] = torch.randn(4, h, h, generator=g)
        else:
            item["target_images"] = torch.rand(3, f, self.size, self.size, generator=g) * 2 - 1
            item["reference_image"] = torch.rand(3, self.size, self.size, generator=g) * 2 - 1
        return item


class RandomClipsDataModule(pl.LightningDataModule):
    def __init__(self, num_frames: int = 2, batch_size: int = 2, n: int = 16, latents: bool = True, seed: int = 0,
                 audio_dim: int = AUDIO_DIM, size: int = SIZE):
        super().__init__()
        self.dataset = RandomClips(n=n, num_frames=num_frames, latents=latents, seed=seed, audio_dim=audio_dim,
                                   size=size)
        self.batch_size = batch_size
        self.seed = seed

    def train_dataloader(self):
        return ResumableLoader(self.dataset, self.batch_size, seed=self.seed)


def batch(num_frames: int = 2, batch_size: int = 2, latents: bool = True, seed: int = 0) -> dict:
    ds = RandomClips(n=batch_size, num_frames=num_frames, latents=latents, seed=seed)
    items = [ds[i] for i in range(batch_size)]
    out = {}
    for k in items[0]:
        out[k] = [it[k] for it in items] if isinstance(items[0][k], str) else torch.stack([it[k] for it in items])
    return out
