"""Generation speed and peak memory for 2 s, 10 s and 20 s of audio (or any durations).

    .venv/bin/python benchmarks/bench_generate.py                       # tiny model, CPU, 128x128, 4 DDIM steps
    .venv/bin/python benchmarks/bench_generate.py --model sd15 --size 512 --steps 25 --device cuda   # full size
    .venv/bin/python benchmarks/bench_generate.py --teacher-student        # 25-step guided DDIM vs 4-step LCM

Every duration runs in a fresh process (so peaks do not carry over) on synthetic inputs (a flat photo with fixed
keypoints, a speech-like signal; face detection is not timed), through ``VExpressPipeline.generate``: reference
encoding, audio encoding, denoising with context windows and batched guidance, chunked decoding, the median filter
and MP4 writing to a temporary file. Weights are random (speed and memory do not depend on them).

Memory:
- CUDA: ``torch.cuda.max_memory_allocated`` over the generation (weights included);
- CPU: the process's peak resident set size (``ru_maxrss``), and the growth of that peak over the resident size
  measured just before generation (model built, inputs in memory): the generation's own working memory.

Each row also counts the denoiser passes per output frame (a hook on the denoising UNet adds up batch rows x frames
of every call, divided by the frames generated): steps x guidance branches, times the window overlap.
``--teacher-student`` runs the rows twice: the teacher as the official inference samples (DDIM, 25 steps, guidance
3.5: two branches) and a distilled student (``sampler=lcm``, 4 steps, guidance 1: one branch), each after one
untimed warm-up generation (``--warmup``), and prints the speed-up; random weights stand in for both (speed does
not depend on them).

The script prints one row per duration and the ratio of the 20 s peak to the 2 s peak (the design target is at most
1.15). Nothing is asserted: figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def build_pipeline(args):
    import torch

    from vexpress.audio.encoders import LogMelEncoder
    from vexpress.models import VExpressConfig, VExpressNet
    from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

    if args.model == "tiny":
        return VExpressPipeline.tiny(sampler=args.sampler, device=args.device, dtype=args.dtype)
    encoder = LogMelEncoder()
    torch.manual_seed(0)
    net = VExpressNet(VExpressConfig.sd15(audio_embedding_dim=encoder.dim))
    return VExpressPipeline(net, sd_vae(), encoder, sampler=args.sampler, device=args.device, dtype=args.dtype)


def sd_vae():
    """A randomly initialised VAE of the sd-vae-ft-mse architecture (speed and memory do not depend on weights)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                         block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4)


def synthetic_inputs(duration: float, size: int, fps: float):
    import numpy as np
    import torch

    from vexpress.pipelines.inputs import PreparedReference
    from vexpress.pipelines.vexpress_pipeline import PreparedInputs

    rate = 16000
    t = np.arange(int(round(duration * rate))) / rate
    wave = (0.2 * np.sin(2 * np.pi * 140 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    num_frames = max(1, int(round(duration * fps)))
    s = size / 512.0
    kps = np.array([[206 * s, 211 * s], [300 * s, 200 * s], [262 * s, 268 * s]], np.float32)
    image = np.full((size, size, 3), 127, np.uint8)
    ref = PreparedReference(image=image, kps=kps, box=(0.0, 0.0, float(size), float(size)),
                            source_size=(size, size), num_faces=1)
    return PreparedInputs(reference=ref, waveform=torch.from_numpy(wave), mux_audio=wave[None], mux_rate=rate,
                          duration=duration, fps=fps, height=size, width=size,
                          kps=np.repeat(kps[None], num_frames, axis=0), retarget="fix_face", crop="none")


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    pipe = build_pipeline(args)
    cuda = pipe.device.type == "cuda"
    inputs = synthetic_inputs(args.duration, args.size, args.fps)
    passes = {"rows": 0}

    def count(module, call_args, kwargs) -> None:
        x = call_args[0] if call_args else kwargs["sample"]
        passes["rows"] += int(x.shape[0]) * int(x.shape[2])  # batch rows x frames of this (B, C, F, h, w) call

    hook = pipe.net.denoising_unet.register_forward_pre_hook(count, with_kwargs=True)
    if args.warmup:  # one untimed short generation first: lazy kernel set-up is not the sampler's cost
        with tempfile.TemporaryDirectory() as tmp:
            pipe.generate(synthetic_inputs(0.5, args.size, args.fps), output_path=Path(tmp) / "warm.mp4",
                          num_inference_steps=1, sampler=args.sampler, guidance_scale=args.guidance,
                          context_frames=args.context_frames, context_overlap=args.context_overlap, progress=False)
    passes["rows"] = 0  # the warm-up's passes are not the measured generation's
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = rss_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = pipe.generate(inputs, output_path=Path(tmp) / "bench.mp4", num_inference_steps=args.steps,
                            sampler=args.sampler, guidance_scale=args.guidance,
                            context_frames=args.context_frames, context_overlap=args.context_overlap,
                            decode_chunk_size=args.decode_chunk_size, median_filter=not args.no_median,
                            progress=False)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    hook.remove()
    row = {"sampler": args.sampler, "steps": args.steps, "guidance": args.guidance,
           "unet_passes_per_frame": passes["rows"] / max(1, out.num_frames), "duration_s": args.duration,
           "frames": out.num_frames, "windows": out.info["windows"],
           "seconds": seconds, "frames_per_s": out.num_frames / seconds,
           "denoise_s": out.info["seconds"]["denoise"], "device": str(pipe.device), "dtype": str(pipe.dtype)}
    if cuda:
        row["peak_bytes"] = int(torch.cuda.max_memory_allocated())
        row["peak_kind"] = "cuda max_memory_allocated"
    else:
        row["peak_bytes"] = peak_rss_bytes()
        row["growth_bytes"] = max(0, peak_rss_bytes() - base)
        row["peak_kind"] = "peak RSS"
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--size", type=int, default=128, help="square output size in pixels")
    parser.add_argument("--durations", default="2,10,20", help="audio durations in seconds, comma separated")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--sampler", default="ddim", choices=["ddim", "dpmpp", "unipc", "lcm"])
    parser.add_argument("--guidance", type=float, default=None,
                        help="guidance scale (default: 3.5, and 1 = one branch for lcm)")
    parser.add_argument("--warmup", action="store_true", help="one untimed 0.5 s generation first")
    parser.add_argument("--teacher-student", action="store_true",
                        help="rows for DDIM 25 steps at guidance 3.5 and for LCM 4 steps at guidance 1")
    parser.add_argument("--context-frames", type=int, default=24)
    parser.add_argument("--context-overlap", type=int, default=4)
    parser.add_argument("--decode-chunk-size", type=int, default=8)
    parser.add_argument("--no-median", action="store_true", help="skip the median filter")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--duration", type=float, help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)

    if args.duration is not None:
        print("ROW " + json.dumps(worker(args)), flush=True)
        return

    if args.teacher_student:
        runs = [("teacher", "ddim", 25, 3.5), ("student", "lcm", 4, 1.0)]
    else:
        runs = [("", args.sampler, args.steps, args.guidance)]
    rows = []
    for label, sampler, steps, guidance in runs:
        passthrough = ["--model", args.model, "--size", str(args.size), "--fps", str(args.fps), "--steps", str(steps),
                       "--sampler", sampler, "--context-frames", str(args.context_frames), "--context-overlap",
                       str(args.context_overlap), "--decode-chunk-size", str(args.decode_chunk_size), "--device",
                       args.device, "--dtype", args.dtype, "--threads", str(args.threads)]
        if guidance is not None:
            passthrough += ["--guidance", str(guidance)]
        if args.no_median:
            passthrough.append("--no-median")
        if args.warmup or args.teacher_student:
            passthrough.append("--warmup")
        print(f"{label + ': ' if label else ''}model={args.model} size={args.size} fps={args.fps:g} steps={steps} "
              f"sampler={sampler} guidance={'default' if guidance is None else guidance} "
              f"context={args.context_frames}/{args.context_overlap} threads={args.threads}")
        print(f"{'audio s':>8} {'frames':>7} {'windows':>8} {'passes/f':>9} {'time s':>8} {'denoise s':>10} "
              f"{'frames/s':>9} {'peak MiB':>9} {'growth MiB':>11}")
        for duration in [float(d) for d in args.durations.split(",")]:
            cmd = [sys.executable, __file__, *passthrough, "--duration", str(duration)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
            if proc.returncode != 0 or not line:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"benchmark worker failed for {duration} s")
            row = {"label": label, **json.loads(line[-1][4:])}
            rows.append(row)
            growth = f"{row['growth_bytes'] / 2**20:11.1f}" if "growth_bytes" in row else f"{'-':>11}"
            print(f"{duration:8.1f} {row['frames']:7d} {row['windows']:8d} {row['unet_passes_per_frame']:9.2f} "
                  f"{row['seconds']:8.2f} {row['denoise_s']:10.2f} {row['frames_per_s']:9.3f} "
                  f"{row['peak_bytes'] / 2**20:9.1f} {growth}",
                  flush=True)
    if args.teacher_student:
        teacher = {r["duration_s"]: r for r in rows if r["label"] == "teacher"}
        for r in (r for r in rows if r["label"] == "student"):
            t = teacher[r["duration_s"]]
            print(f"{r['duration_s']:g} s of audio: student {r['frames_per_s']:.3f} frames/s vs teacher "
                  f"{t['frames_per_s']:.3f} = {t['seconds'] / r['seconds']:.1f}x faster (denoising "
                  f"{t['denoise_s'] / r['denoise_s']:.1f}x), "
                  f"{t['unet_passes_per_frame'] / r['unet_passes_per_frame']:.1f}x fewer UNet passes per frame")
        rows_for_memory = [r for r in rows if r["label"] == "teacher"]
    else:
        rows_for_memory = rows
    if len(rows_for_memory) > 1:
        rows_m = rows_for_memory
        ratio = rows_m[-1]["peak_bytes"] / rows_m[0]["peak_bytes"]
        print(f"peak memory ({rows_m[0]['peak_kind']}) at {rows_m[-1]['duration_s']:g} s / at "
              f"{rows_m[0]['duration_s']:g} s = {ratio:.3f} (target <= 1.15) on {rows_m[0]['device']} "
              f"{rows_m[0]['dtype']}")
        if "growth_bytes" in rows_m[0]:
            g0, g1 = rows_m[0]["growth_bytes"], rows_m[-1]["growth_bytes"]
            print(f"working-memory growth over the pre-generation RSS: {g0 / 2**20:.1f} MiB -> {g1 / 2**20:.1f} MiB")
    if args.json:
        from vexpress.utils.io import write_json

        write_json(args.json, rows)


if __name__ == "__main__":
    main()
