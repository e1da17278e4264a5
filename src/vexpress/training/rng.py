"""Counter-based random streams: the state of a stream is (seed, rank, counter), a few integers.

Training draws (noise, timesteps, VAE samples, condition-dropout masks) come from a ``torch.Generator`` re-seeded
with ``mix_seed(seed, stream, rank, counter)`` at every step. Saving the counter in a checkpoint therefore saves the
generator exactly, every DDP rank gets its own stream without any communication, and a resumed run draws the same
numbers as an uninterrupted one.
"""

from __future__ import annotations

import hashlib

import torch


def mix_seed(*parts: int | str) -> int:
    """A 63-bit seed from any tuple of ints/strings (stable across Python runs and platforms)."""
    h = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def generator_for(*parts: int | str) -> torch.Generator:
    """A CPU generator seeded with :func:`mix_seed` of ``parts``."""
    g = torch.Generator()
    g.manual_seed(mix_seed(*parts))
    return g
