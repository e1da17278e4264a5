"""A resumable training loader: killing a run and resuming it sees the same batches as an uninterrupted run.

Lightning restores a loader's position only if the loader has ``state_dict``/``load_state_dict`` (a plain
``DataLoader`` restarts the epoch, and its shuffling depends on the global RNG). :class:`ResumableLoader` wraps a
map-style dataset:

- epoch ``e`` visits ``randperm(len(dataset))`` drawn from ``(seed, e)``, sharded over DDP ranks (every rank gets the
  same number of samples), in batches of ``batch_size`` (the last partial batch is dropped);
- ``state_dict`` = (epoch, batches consumed in the epoch); after a restore the epoch continues where it stopped;
- the batches themselves are loaded by an ordinary ``DataLoader`` (workers, pinning, collate) over the remaining
  indices of the epoch.

``state_dict`` counts the batches handed out. Lightning does not fetch ahead from a loader with a length (this one
has one), so that count is what the loop consumed when it saves a checkpoint; ``prefetch`` subtracts a look-ahead
for loops that do fetch ahead.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import torch
from torch.utils.data import DataLoader, Dataset

from vexpress.training.rng import mix_seed


class ResumableLoader:
    """Args:
    dataset: map-style dataset.
    batch_size: samples per batch and rank.
    seed: shuffling seed.
    shuffle: permute every epoch (else dataset order).
    num_workers / collate_fn / pin_memory / persistent_workers: passed to the inner ``DataLoader``.
    prefetch: batches the training loop fetches ahead of the one being trained (Lightning, sized loader: 0).
    epoch_keys: pass ``epoch * len(dataset) + index`` as the sample key (datasets whose random choices depend on
        the key, like ``TalkingFaceDataset``, then draw fresh frames every epoch, as with its ``EpochSampler``).
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, shuffle: bool = True, num_workers: int = 0,
                 collate_fn: Callable | None = None, pin_memory: bool = False, prefetch: int = 0,
                 worker_init_fn: Callable | None = None, epoch_keys: bool = False):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.num_workers = int(num_workers)
        self.collate_fn = collate_fn
        self.pin_memory = bool(pin_memory)
        self.prefetch = int(prefetch)
        self.worker_init_fn = worker_init_fn
        self.epoch_keys = bool(epoch_keys)
        self.epoch = 0
        self.consumed = 0  # batches of epoch ``epoch`` handed out so far

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _indices(self, epoch: int) -> list[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, "epoch", epoch))
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        rank, world = self._rank_world()
        per_rank = n // world
        mine = order[rank * per_rank:(rank + 1) * per_rank]
        return [epoch * n + i for i in mine] if self.epoch_keys else mine

    def __len__(self) -> int:
        _, world = self._rank_world()
        return (len(self.dataset) // world) // self.batch_size

    def _position(self) -> tuple[int, int]:
        """(epoch, batches consumed) with a finished epoch rolled over to the next one."""
        consumed = max(0, self.consumed - self.prefetch)
        if consumed >= len(self):
            return self.epoch + 1, 0
        return self.epoch, consumed

    def __iter__(self) -> Iterator[Any]:
        self.epoch, self.consumed = self._position()
        n_batches = len(self)
        indices = self._indices(self.epoch)[: n_batches * self.batch_size]
        rest = indices[self.consumed * self.batch_size:]
        if not rest:
            return
        loader = DataLoader(_Keys(self.dataset, rest), batch_size=self.batch_size, shuffle=False, drop_last=True,
                            num_workers=self.num_workers, collate_fn=self.collate_fn, pin_memory=self.pin_memory,
                            worker_init_fn=self.worker_init_fn)
        for batch in loader:
            self.consumed += 1  # counted before the batch is handed out: a save during its step includes it
            yield batch

    def state_dict(self) -> dict[str, int]:
        epoch, consumed = self._position()
        return {"epoch": epoch, "consumed": consumed, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.consumed = int(state["consumed"])
        self.seed = int(state.get("seed", self.seed))


class _Keys(Dataset):
    """``dataset[keys[i]]`` (like ``Subset`` but keys may exceed ``len(dataset)``: epoch-offset sample keys)."""

    def __init__(self, dataset: Dataset, keys: list[int]):
        self.dataset, self.keys = dataset, keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.keys[i]]


def make_resumable(loader: DataLoader, seed: int = 0, epoch_keys: bool = True) -> ResumableLoader:
    """A :class:`ResumableLoader` over a ``DataLoader``'s dataset with the same batch size, collate and workers.

    The adapter the training app applies to the data module's training loader (``resumable_data: true``): the
    samples are the data module's (same dataset, same keys scheme), only the order is drawn from ``seed`` and the
    position is saved in checkpoints.
    """
    if isinstance(loader, ResumableLoader):
        return loader
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        return loader  # not a plain batched DataLoader: leave it alone
    return ResumableLoader(loader.dataset, loader.batch_size, seed=seed, shuffle=True,
                           num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                           pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn, epoch_keys=epoch_keys)
