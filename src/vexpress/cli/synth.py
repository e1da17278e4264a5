"""``vexpress-synth``: generate the synthetic talking-face benchmark (or reuse it from the cache).

    vexpress-synth
    vexpress-synth synthetic.size=128 workers=8
    vexpress-synth output=/data/synth64 preview=grid.png
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from vexpress.cli._common import hydra_main, stops_cleanly, user_errors

log = logging.getLogger("vexpress.synth")


def _progress():
    from tqdm.auto import tqdm

    bar = {"bar": None}

    def update(done: int, total: int) -> None:
        if bar["bar"] is None:
            bar["bar"] = tqdm(total=total, desc="synthetic clips", unit="clip", file=sys.stderr)
        bar["bar"].n = done
        bar["bar"].refresh()
        if done >= total:
            bar["bar"].close()

    return update


def save_preview(root: Path, path: Path, frames_per_row: int = 8, max_rows: int = 8) -> Path:
    """A PNG grid: one row per clip (first clip of each identity), frames spread over the clip."""
    import numpy as np
    from PIL import Image

    from vexpress.data.records import load_manifest
    from vexpress.utils.io import atomic_path

    rows, seen = [], set()
    for rec in load_manifest(root):
        if rec.identity in seen:
            continue
        seen.add(rec.identity)
        idx = np.linspace(0, rec.num_frames - 1, frames_per_row).astype(int)
        rows.append(np.concatenate(list(rec.frames(idx)), axis=1))
        if len(rows) >= max_rows:
            break
    grid = np.concatenate(rows, axis=0)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return path


@user_errors
@stops_cleanly
def run(cfg) -> Path:
    from omegaconf import OmegaConf

    from vexpress.synthetic.generate import SynthConfig, ensure_synthetic_dataset, generate_dataset
    from vexpress.utils.io import check_writable, check_writable_folder, removing_empty_new_folders

    scfg = SynthConfig.from_dict(OmegaConf.to_container(cfg.synthetic, resolve=True))
    # every destination is checked (by creating a file there) before any compute
    output = Path(str(cfg.output)).expanduser() if cfg.output else None
    preview = Path(str(cfg.preview)).expanduser() if cfg.preview else None
    cache_dir = Path(str(cfg.cache_dir)).expanduser()
    with removing_empty_new_folders(output or cache_dir, *([preview.parent] if preview else [])):
        check_writable_folder(output or cache_dir, "output folder" if output else "cache folder")
        if preview:
            preview = check_writable(preview, "preview image")
        t0 = time.perf_counter()
        if output:
            root = generate_dataset(scfg, output, workers=int(cfg.workers), progress=_progress())
        else:
            root = ensure_synthetic_dataset(scfg, cache_dir=cache_dir, workers=int(cfg.workers), progress=_progress())
    seconds = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    n = scfg.num_identities * scfg.clips_per_identity
    print(f"synthetic set: {root}\n  {n} clips ({scfg.num_identities - scfg.heldout_identities} train identities, "
          f"{scfg.heldout_identities} heldout), {scfg.num_frames} frames of {scfg.size}x{scfg.size} each, "
          f"{size / 1e6:.1f} MB, ready in {seconds:.1f} s (config key {scfg.key()})")
    if preview:
        print(f"  preview: {save_preview(root, preview)}")
    return root


def main() -> None:
    hydra_main("synth", run, "vexpress-synth")  # one-line config errors, --help of its own groups


if __name__ == "__main__":
    main()
