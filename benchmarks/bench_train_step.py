"""Print the time of one training step of the network (forward, backward, optimizer) in float32 and under bfloat16
autocast, so the demo's CPU budget can be spent where it pays.

    .venv/bin/python benchmarks/bench_train_step.py [--config tiny] [--batch 2] [--frames 4] [--size 64] \
        [--threads 1] [--repeats 10]

A step here is what the joint stage does per batch: the ReferenceNet encodes each clip's reference frame, the denoiser
runs over the clip's frames with audio tokens and keypoint features, an MSE loss on its output, backward through
both, and a fused AdamW step over every parameter. Inputs are random (timing only). Figures: median over
``--repeats`` after two warm-up steps, and the largest absolute difference of the first step's loss between the two
precisions (how far bfloat16 moves the numbers). On CPUs with AMX (``lscpu | grep amx``) oneDNN runs bfloat16
matrix products on it.

``--caption-distill W`` compares float32 steps without and with the caption-distillation term at weight W
(:mod:`vexpress.training.caption_distill`, as ``make demo``'s audio + motion stage trains): what the term costs per
step. The two are timed in alternation, so a machine whose speed drifts affects both alike.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch


def main() -> None:
    from vexpress.models import VExpressConfig, VExpressNet

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", choices=["tiny"])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--latent-downscale", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--caption-distill", type=float, default=None, metavar="W",
                        help="compare float32 steps without and with caption distillation at weight W (instead of "
                        "float32 against bfloat16)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = VExpressConfig.tiny(latent_downscale=args.latent_downscale)
    h = args.size // cfg.latent_downscale
    b, f = args.batch, args.frames
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(b, 4, f, h, h, generator=g)
    ref = torch.randn(b, 4, h, h, generator=g)
    tokens = torch.randn(b, f, 5, cfg.unet["cross_attention_dim"], generator=g)
    kps = torch.randn(b, cfg.unet["block_out_channels"][0], f, h, h, generator=g) * 0.1
    t = torch.full((b,), 500)
    print(f"config={args.config} threads={torch.get_num_threads()} batch={b} frames={f} latents={h}x{h}")
    captions = torch.randn(b, f, 3, cfg.unet["cross_attention_dim"], generator=g)
    if args.caption_distill is None:
        variants = (("float32", None, 0.0), ("bfloat16 autocast", torch.bfloat16, 0.0))
    else:
        variants = (("float32", None, 0.0), ("+ caption distill", None, args.caption_distill))

    def make_step(dtype, distill: float):
        from vexpress.training.caption_distill import CaptionDistillation

        torch.manual_seed(0)
        net = VExpressNet(cfg).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)

        def step() -> float:
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                with CaptionDistillation(net, captions) if distill else contextlib.nullcontext() as hooks:
                    bank = net.encode_reference(ref)
                    out = net.denoising_unet(lat, t, audio_tokens=tokens, kps_features=kps, reference=bank)
                loss = out.float().pow(2).mean() + (distill * hooks.loss() if hooks is not None else 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        return step

    steps = [make_step(dtype, distill) for _, dtype, distill in variants]
    firsts = [step() for step in steps]
    for step in steps:
        step()
    times = [[] for _ in steps]
    for _ in range(args.repeats):
        for i, step in enumerate(steps):
            t0 = time.perf_counter()
            step()
            times[i].append(time.perf_counter() - t0)
    medians = [statistics.median(ts) for ts in times]
    for (name, _, _), med, first in zip(variants, medians, firsts):
        print(f"{name:18s} {med * 1e3:8.1f} ms per step (first loss {first:.5f})")
    if args.caption_distill is None:
        print(f"bfloat16 / float32 time: x{medians[1] / medians[0]:.2f}; first-step loss difference "
              f"{abs(firsts[1] - firsts[0]):.2e}")
    else:
        print(f"with / without caption distillation time: x{medians[1] / medians[0]:.2f}")


if __name__ == "__main__":
    main()
