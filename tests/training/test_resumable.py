"""ResumableLoader: the order is a function of (seed, epoch), and a restored position continues exactly."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from vexpress.training.resumable import ResumableLoader, make_resumable


class Keys(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, key: int) -> torch.Tensor:
        return torch.tensor(key)


def _take(loader, n):
    out, it = [], iter(loader)
    while len(out) < n:
        try:
            out.append(next(it).tolist())
        except StopIteration:
            it = iter(loader)
    return out


def test_epochs_and_restore_continue_the_same_sequence():
    ref = _take(ResumableLoader(Keys(), 3, seed=1), 9)  # 3 batches per epoch (1 sample dropped), 3 epochs
    assert len(ResumableLoader(Keys(), 3)) == 3
    assert sorted(sum(ref[:3], [])) != sorted(sum(ref[3:6], [])) or ref[:3] != ref[3:6]
    for cut in range(1, 8):
        a = ResumableLoader(Keys(), 3, seed=1)
        first = _take(a, cut)
        # Lightning stops iterating when a sized epoch is used up: emulate a save right after batch `cut`
        state = a.state_dict()
        b = ResumableLoader(Keys(), 3, seed=0)
        b.load_state_dict(state)
        assert first + _take(b, 9 - cut) == ref, cut


def test_epoch_keys_offset_and_adapter():
    a = ResumableLoader(Keys(), 5, seed=0, epoch_keys=True)
    e0, e1 = _take(a, 2), _take(a, 2)
    assert max(max(b) for b in e0) < 10 and min(min(b) for b in e1) >= 10
    dl = torch.utils.data.DataLoader(Keys(), batch_size=2)
    wrapped = make_resumable(dl, seed=3)
    assert isinstance(wrapped, ResumableLoader) and wrapped.batch_size == 2 and len(wrapped) == 5
    assert make_resumable(wrapped) is wrapped
