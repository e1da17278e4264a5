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
"""

from __future__ import annotations

import argparse
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
    results = {}
    for name, dtype in (("float32", None), ("bfloat16 autocast", torch.bfloat16)):
        torch.manual_seed(0)
        net = VExpressNet(cfg).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)

        def step() -> float:
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                bank = net.encode_reference(ref)
                out = net.denoising_unet(lat, t, audio_tokens=tokens, kps_features=kps, reference=bank)
                loss = out.float().pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss.detach())

        first = step()
        step()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        results[name] = (statistics.median(times), first)
        print(f"{name:18s} {results[name][0] * 1e3:8.1f} ms per step (first loss {first:.5f})")
    (t32, l32), (t16, l16) = results["float32"], results["bfloat16 autocast"]
    print(f"bfloat16 / float32 time: x{t16 / t32:.2f}; first-step loss difference {abs(l16 - l32):.2e}")


if __name__ == "__main__":
    main()
