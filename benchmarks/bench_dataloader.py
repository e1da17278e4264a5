"""Training-sample throughput: our loader (seek-decode only the needed frames) vs the official approach (decode
the whole clip for every sample), on the same clips and the same sample plans. Prints samples/s and the ratio.

    .venv/bin/python benchmarks/bench_dataloader.py                       # synthetic default set + shared samples
    .venv/bin/python benchmarks/bench_dataloader.py --root /data/hdtf_prepared --image-size 512 --frames 8 20

Single process (no DataLoader workers) so the figures compare decoding strategies, not parallelism. The naive
side decodes the clip and then builds the same images; V-Kps drawing, masks and audio windows are identical for
both and are left out of both timings. A cached run reads latents instead and decodes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")


def _images_only(ds, key):
    """Our path, restricted to what the naive path also does (decode + crop/resize + flip)."""
    import numpy as np
    import torch

    from vexpress.data.talking_face import crop_resize

    p = ds.plan(key)
    rec = ds.records[p["clip"]]
    ids = np.concatenate([[p["reference"]], p["frames"]])
    frames = crop_resize(ds._reader(p["clip"]).get(ids.tolist()), ds._box(p["clip"]), ds.image_size)
    if p["flip"]:
        frames = frames[:, :, ::-1]
    img = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)
    return {"reference_image": img[:, 0], "target_images": img[:, 1:], "clip": rec.id}


def bench(name, records, image_size, frames, samples, margin, latent_downscale=8):
    import torch

    from vexpress.data.talking_face import TalkingFaceDataset, naive_sample

    torch.set_num_threads(1)
    ds = TalkingFaceDataset(records, num_frames=frames, image_size=image_size, reference_margin=margin,
                            latent_downscale=latent_downscale, seed=0, samples_per_clip=max(1, samples))
    keys = list(range(samples))
    _images_only(ds, keys[0]), naive_sample(ds, keys[0])  # warm-up (index building, imports)
    t0 = time.perf_counter()
    for k in keys:
        _images_only(ds, k)
    ours = samples / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for k in keys:
        naive_sample(ds, k)
    naive = samples / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for k in keys:
        ds[k]
    full = samples / (time.perf_counter() - t0)
    mean_len = sum(r.num_frames for r in records) / len(records)
    print(f"{name:<28} {image_size:>5} {frames:>6} {mean_len:>8.0f} {ours:>10.1f} {naive:>10.1f} "
          f"{ours / naive:>7.1f}x {full:>12.1f}")
    return ours, naive


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", help="a preprocessed dataset folder (default: synthetic set + shared samples)")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--frames", type=int, nargs="+", default=[1, 8, 20])
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--margin", type=int, default=25)
    args = ap.parse_args(argv)

    from vexpress.data.records import load_manifest

    sets = []
    if args.root:
        recs = load_manifest(args.root)
        sets.append((Path(args.root).name, recs, args.image_size or recs[0].height))
    else:
        from vexpress.synthetic import SynthConfig, ensure_synthetic_dataset

        root = ensure_synthetic_dataset(SynthConfig())
        sets.append(("synthetic 64px (gop 10)", load_manifest(root, split="train"), args.image_size or 64))
        from vexpress.utils.paths import samples_dir

        shared = samples_dir()
        if (shared / "AOC" / "gt.mp4").is_file():
            from vexpress.preprocessing.clips import preprocess

            out = Path(tempfile.gettempdir()) / "vexpress_bench_samples"
            preprocess([shared / c / "gt.mp4" for c in ("10", "AOC", "tys")], out,
                       {"val_fraction": 0.0, "identity": "parent"}, workers=1, progress=False, input_root=shared)
            sets.append(("shared samples 512px", load_manifest(out), args.image_size or 512))
            # the same clips re-encoded by the preprocessing with a keyframe every 12 frames (reencode=true)
            out2 = Path(tempfile.gettempdir()) / "vexpress_bench_samples_gop12"
            preprocess([shared / c / "gt.mp4" for c in ("10", "AOC", "tys")], out2,
                       {"val_fraction": 0.0, "identity": "parent", "reencode": True, "gop": 12}, workers=1,
                       progress=False, input_root=shared)
            sets.append(("shared samples, gop 12", load_manifest(out2), args.image_size or 512))
        else:
            print(f"(shared samples not found at {shared}: real-clip rows skipped)", file=sys.stderr)
    print(f"{'clips':<28} {'size':>5} {'frames':>6} {'clip len':>8} {'ours/s':>10} {'naive/s':>10} {'ratio':>8} "
          f"{'full sample/s':>12}")
    for name, recs, size in sets:
        for f in args.frames:
            longest = max(r.num_frames for r in recs)
            if f > longest:
                continue
            bench(name, recs, size, f, args.samples, args.margin, latent_downscale=8 if size % 8 == 0 else 4)


if __name__ == "__main__":
    main()
