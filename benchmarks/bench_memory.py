"""Training memory per stage at SD1.5 size: bytes per component, and what fits on 24 / 40 / 80 / 141 GB GPUs.

    .venv/bin/python benchmarks/bench_memory.py                    # official frames and batches, 512x512, bf16-mixed
    .venv/bin/python benchmarks/bench_memory.py --size 256 --frames 20 --batch 1 --stage audio_motion
    .venv/bin/python benchmarks/bench_memory.py --json mem.json    # rows for comparing with measured CUDA peaks
    .venv/bin/python benchmarks/bench_memory.py --generation sd15 --size 256 --frames 8   # measured, CPU, ~11 GB

Figures come from ``vexpress.training.memory.estimate_training_memory`` (the arithmetic, written down in that
module's docstring; the network is built on the ``meta`` device, so this needs no memory). Components are per
GPU before sharding, in GB (1e9 bytes). "fits" tables: the fewest GPUs under each Lightning strategy (DDP, FSDP
full shard, DeepSpeed ZeRO-2) with 2 GB kept for the CUDA context and allocator slack, "-" if none up to 64.
``tests/training/test_memory.py`` checks the arithmetic against a measured step.

``--generation parity|sd15`` instead MEASURES generation on the CPU (float32, random weights, the sd-vae-ft-mse
architecture, every frame with its own keypoints, guidance 3.5): the allocation peak of each phase over the memory
in use before generation (model and inputs), from glibc's counters (``PeakMeter``), with the operator at the peak.
"""

from __future__ import annotations

import argparse
import json

#: official per-GPU clip shape per stage (spec §4.2): frames, batch per GPU, checkpointing
OFFICIAL = {"image": (1, 8, False), "audio_motion": (20, 1, True), "joint": (8, 1, False)}
COMPONENTS = ("params_trainable", "params_frozen", "autocast_weight_copies", "grads", "optimizer", "activations",
              "recompute", "workspace")


def main(argv=None) -> None:
    from vexpress.models import VExpressConfig
    from vexpress.training.memory import STRATEGIES, estimate_training_memory, min_gpus, parameter_counts

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=sorted(OFFICIAL), action="append", help="stage(s); default: all three")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--frames", type=int, help="frames per clip (default: the stage's official count)")
    p.add_argument("--batch", type=int, help="clips per GPU (default: official)")
    p.add_argument("--precision", default="bf16-mixed", choices=["32-true", "bf16-mixed", "16-mixed"])
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--generation", choices=["parity", "sd15"], help="measure generation phases instead (CPU)")
    p.add_argument("--context", default="24,4", help="generation: context frames,overlap")
    p.add_argument("--steps", type=int, default=1, help="generation: DDIM steps")
    p.add_argument("--decode-frames", type=int, default=2, help="generation: frames decoded (0: skip)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.generation:
        generation_phases(args)
        return

    from pathlib import Path

    from omegaconf import OmegaConf

    conf = Path(__file__).resolve().parents[1] / "conf" / "stage"
    cfg = VExpressConfig.sd15()
    counts = parameter_counts(cfg)
    rows = []
    stages = args.stage or ["image", "audio_motion", "joint"]
    print(f"SD1.5 size, {args.size}x{args.size}, {args.precision}; GB per GPU before sharding")
    header = f"{'stage':13} {'F':>3} {'B':>2} {'opt':9} {'ckpt':4} " + " ".join(f"{c[:11]:>11}" for c in COMPONENTS)
    print(header + f" {'total':>8}")
    for stage in stages:
        trainable = OmegaConf.load(conf / f"{stage}.yaml")["trainable"]
        frames, batch, official_ckpt = OFFICIAL[stage]
        frames = args.frames or frames
        batch = args.batch or batch
        for optimizer in ("adamw", "adamw8bit"):
            for ckpt in sorted({official_ckpt, True}):
                est = estimate_training_memory(cfg, list(trainable), stage=stage, frames=frames, batch=batch,
                                               height=args.size, width=args.size, precision=args.precision,
                                               optimizer=optimizer, checkpointing=ckpt, counts=counts)
                c = est.components
                print(f"{stage:13} {frames:3d} {batch:2d} {optimizer:9} {'on' if ckpt else 'off':4} "
                      + " ".join(f"{c[k] / 1e9:11.2f}" for k in COMPONENTS) + f" {est.total / 1e9:8.2f}")
                fits = {f"{s}@{gb}GB": min_gpus(est, s, gb * 1e9) for s in STRATEGIES for gb in (24, 40, 80, 141)}
                rows.append({**est.row(), "per_frame_activation_bytes": int(est.per_frame_activations()),
                             "min_gpus": fits})
    print()
    print("fewest GPUs that fit (DDP / FSDP / ZeRO-2), '-' = does not fit up to 64:")
    print(f"{'stage':13} {'opt':9} {'ckpt':4} " + " ".join(f"{str(gb) + ' GB':>14}" for gb in (24, 40, 80, 141)))
    for r in rows:
        cells = []
        for gb in (24, 40, 80, 141):
            vals = [r["min_gpus"][f"{s}@{gb}GB"] for s in STRATEGIES]
            cells.append("/".join("-" if v is None else str(v) for v in vals))
        print(f"{r['stage']:13} {r['optimizer']:9} {'on' if r['checkpointing'] else 'off':4} "
              + " ".join(f"{c:>14}" for c in cells))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def generation_phases(args) -> None:
    import numpy as np
    import torch
    from diffusers import AutoencoderKL

    from vexpress.models import VExpressConfig, VExpressNet
    from vexpress.pipelines.guidance import Guidance
    from vexpress.pipelines.vexpress_pipeline import VExpressPipeline
    from vexpress.training.memory import PeakMeter, malloc_in_use
    from vexpress.utils.paths import parity_dir

    torch.set_num_threads(args.threads)
    frames, size = args.frames or 8, args.size
    cf, co = (int(v) for v in args.context.split(","))
    cfg = VExpressConfig.sd15() if args.generation == "sd15" else VExpressConfig.from_json(parity_dir() / "config.json")
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                        block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4)
    pipe = VExpressPipeline(VExpressNet(cfg), vae, None, device="cpu", dtype=torch.float32)
    s = size / 512
    kps = np.array([[206 * s, 211 * s], [300 * s, 200 * s], [262 * s, 268 * s]], np.float32)
    kps = np.stack([kps + np.float32(i) for i in range(frames)])
    image = np.full((size, size, 3), 127, np.uint8)
    feats = torch.randn(max(2, int(frames / 30 * 50)), cfg.audio_embedding_dim)
    base = malloc_in_use() or 0
    print(f"{args.generation} widths, {size}x{size}, {frames} frames, windows {cf}/{co}, {args.steps} step(s), "
          f"{torch.get_num_threads()} threads; in use before generation: {base / 1e9:.2f} GB")
    peaks = {}

    def phase(name, fn):
        with PeakMeter() as meter:
            out = fn()
        peaks[name] = meter.peak - base
        print(f"  {name:9} peak over pre-generation {peaks[name] / 1e6:8.1f} MB   at {meter.where}", flush=True)
        return out

    bank, _ = phase("reference", lambda: pipe.encode_reference(image))
    audio = phase("audio", lambda: pipe.encode_audio(feats, frames, features=True))
    kc = phase("kps", lambda: pipe.encode_kps(kps, size, size))
    lat = pipe.prepare_latents(frames, size, size, 42)
    lat = phase("denoise", lambda: pipe.denoise(lat, bank, audio, kc, num_inference_steps=args.steps,
                                                guidance=Guidance(3.5), context_frames=cf, context_overlap=co,
                                                reference_attention_weight=0.95, audio_attention_weight=3.0,
                                                progress=False))
    if args.decode_frames:
        phase("decode", lambda: [c.shape for c in pipe.decode_latents(lat[:, :, :args.decode_frames], 8)])
    top = max(peaks, key=peaks.get)
    print(f"generation peak: {(base + peaks[top]) / 1e9:.2f} GB in use ({top})")


if __name__ == "__main__":
    main()
