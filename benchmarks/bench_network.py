"""Print forward-pass timings of the network and what the constant-work savings buy.

    .venv/bin/python benchmarks/bench_network.py [--config parity|tiny|sd15] [--frames 8] [--size 128] [--repeats 5]

Figures printed (median over repeats, after one warm-up):
- one denoiser forward with a given reference bank (conditional branch);
- a classifier-free-guidance step [uncond, cond] as we run it (unconditional reference attention = its bias, K/V
  from the bank cache) vs the official way (zero bank attended like a real one, K/V projected per call with the
  bank repeated over frames);
- the ReferenceNet call that is done once per video.
Runs on CUDA when available (``--device cuda``), CPU otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _timeit(fn, repeats: int, device: torch.device) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    from vexpress.models import DropMask, ReferenceBank, VExpressConfig, VExpressNet
    from vexpress.utils.paths import parity_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="parity", choices=["parity", "tiny", "sd15"])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="image size; latents are size / latent_downscale")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = {"parity": lambda: VExpressConfig.from_json(parity_dir() / "config.json"),
           "tiny": lambda: VExpressConfig.tiny(), "sd15": VExpressConfig.sd15}[args.config]()
    torch.manual_seed(0)
    net = VExpressNet(cfg).to(device).eval()
    h = args.size // cfg.latent_downscale
    f = args.frames
    g = torch.Generator().manual_seed(0)
    lat = torch.randn(1, 4, f, h, h, generator=g).to(device)
    ref = torch.randn(1, 4, h, h, generator=g).to(device)
    tokens = torch.randn(1, f, 5, cfg.unet["cross_attention_dim"], generator=g).to(device)
    kps = torch.randn(1, cfg.unet["block_out_channels"][0], f, h, h, generator=g).to(device) * 0.1
    t = torch.tensor([500], device=device)
    params = sum(p.numel() for p in net.parameters())
    print(f"config={args.config} params={params / 1e6:.1f}M device={device} threads={torch.get_num_threads()} "
          f"frames={f} latents={h}x{h}")

    with torch.no_grad():
        t_ref = _timeit(lambda: net.encode_reference(ref), args.repeats, device)
        bank = net.encode_reference(ref)
        t_cond = _timeit(lambda: net.denoising_unet(lat, t, audio_tokens=tokens, kps_features=kps, reference=bank),
                         args.repeats, device)

        lat2 = lat.repeat(2, 1, 1, 1, 1)
        tok2 = tokens.repeat(2, 1, 1, 1)
        kps2 = kps.repeat(2, 1, 1, 1, 1)
        ours_mask = DropMask(torch.tensor([True, False]), torch.tensor([True, False]), torch.tensor([True, False]))

        def ours() -> None:
            net.denoising_unet(lat2, t, audio_tokens=tok2, kps_features=kps2, reference=bank, drop=ours_mask)

        def official_like() -> None:
            # the official path: [zero bank, bank] repeated per frame inside attention, K/V projected every call
            fresh = ReferenceBank({k: torch.cat([torch.zeros_like(v), v]) for k, v in bank.features.items()})
            mask = DropMask(torch.tensor([False, False]), torch.tensor([True, False]), torch.tensor([True, False]))
            net.denoising_unet(lat2, t, audio_tokens=tok2, kps_features=kps2, reference=fresh, drop=mask)

        t_ours = _timeit(ours, args.repeats, device)
        t_off = _timeit(official_like, args.repeats, device)

    print(f"ReferenceNet (once per video):            {t_ref * 1e3:8.1f} ms")
    print(f"denoiser forward, conditional, B=1:        {t_cond * 1e3:8.1f} ms")
    print(f"CFG step [uncond, cond], ours:            {t_ours * 1e3:8.1f} ms")
    print(f"CFG step [uncond, cond], official-style:  {t_off * 1e3:8.1f} ms  (x{t_off / t_ours:.2f} of ours)")


if __name__ == "__main__":
    main()
