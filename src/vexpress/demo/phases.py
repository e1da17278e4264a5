"""Wall-clock phases and progress bars of the demo (and of the other applications built like it)."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator


class Phases:
    """Wall-clock time per phase (printed as it goes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.t0 = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        print(f"[demo] {name} ...", flush=True)
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
            print(f"[demo] {name}: {self.seconds[name]:.1f} s (total {self.total:.1f} s)", flush=True)

    @property
    def total(self) -> float:
        return time.perf_counter() - self.t0


def progress_bar(total: int, desc: str):
    """A transient tqdm bar (``total`` may be raised while it runs)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
