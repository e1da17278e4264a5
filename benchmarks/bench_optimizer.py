"""One AdamW step over a model's parameters: torch's loop, ``foreach`` and ``fused`` (what ``training.optim.adamw``
picks by default).

    .venv/bin/python benchmarks/bench_optimizer.py [--model tiny|sd15-meta] [--repeats 10] [--threads N]

Prints one line per variant: milliseconds per step (median of ``--repeats`` after 3 warm-up steps). Runs on CUDA
when available (``--device cuda``), CPU otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from vexpress.models.config import VExpressConfig
    from vexpress.models.vexpress_net import VExpressNet

    net = VExpressNet(VExpressConfig.tiny(audio_embedding_dim=80, latent_downscale=4)).to(args.device)
    params = list(net.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    print(f"device={args.device} threads={torch.get_num_threads()} tensors={len(params)} "
          f"parameters={sum(p.numel() for p in params) / 1e6:.2f}M")
    for name, kw in (("loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(params, lr=1e-4, **kw)
        for _ in range(3):
            opt.step()
        times = []
        for _ in range(args.repeats):
            if args.device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            opt.step()
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        print(f"AdamW {name:>8}: {statistics.median(times) * 1e3:8.1f} ms per step")


if __name__ == "__main__":
    main()
