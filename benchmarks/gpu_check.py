"""One script that proves the package at full size on a GPU; one JSON line per check (``benchmarks/gpu_check.sh``).

    benchmarks/gpu_check.sh                      # on a CUDA machine: SD1.5 size, 512x512, 25 DDIM steps
    benchmarks/gpu_check.sh --cpu-smoke          # anywhere: the same checks at tiny sizes on the CPU (a test runs it)

Checks, in priority order (a time budget, ``--budget-s``, skips what would not fit and says so):

- ``env``: torch, CUDA, the device, diffusers and bitsandbytes versions.
- ``parity``: the network and the sampling loop against the official-code vectors (``shared/parity/dev`` or
  ``--parity-dir``), float32 with TF32 off, on the check's device; every setting read from the set's config.json.
- ``unet_call``: one guided denoiser call of one context window (all guidance branches in one batch), the unit of
  generation cost, in fp32 (TF32 off), fp32 with TF32, fp16 and bf16: milliseconds per call and peak memory.
- ``generate``: end-to-end generation (reference and audio encoding, 25 DDIM steps over context windows, VAE
  decode, median filter; no file writing) for 2 s and 10 s of audio at 30 fps: frames/s and peak memory, per dtype.
- ``train``: one optimisation step of each stage (image, audio_motion, joint) at the official frame counts and batch
  sizes, bf16 autocast with fp32 master weights, the stage's gradient checkpointing, 8-bit AdamW when bitsandbytes
  is present (else torch AdamW, said in the line): step time (second step), peak memory, parameter counts.
- ``compile``: ``torch.compile`` of the denoising UNet: compile time and milliseconds per call after warm-up.

Weights are random (speed and memory do not depend on them); the audio encoder is a randomly initialised
wav2vec2-base (the official encoder's architecture), the VAE the sd-vae-ft-mse architecture. Nothing is downloaded.
Figures are printed, never asserted; ``status`` is ``ok``, ``skipped`` (with a reason) or ``error`` (with the message).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Report:
    """Prints one JSON line per result (and appends it to ``path``); keeps the time budget."""

    def __init__(self, path: str | None, budget_s: float):
        self.path = Path(path) if path else None
        self.t0 = time.perf_counter()
        self.budget_s = float(budget_s)
        self.rows: list[dict] = []

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def emit(self, check: str, status: str = "ok", **fields) -> dict:
        row = {"check": check, "status": status, **fields, "elapsed_s": round(time.perf_counter() - self.t0, 2)}
        self.rows.append(row)
        line = json.dumps(row, default=str)
        print(line, flush=True)
        if self.path is not None:
            with open(self.path, "a") as fh:
                fh.write(line + "\n")
        return row

    def fits(self, check: str, estimate_s: float, **fields) -> bool:
        if estimate_s <= self.left():
            return True
        self.emit(check, "skipped", reason=f"time budget: needs ~{estimate_s:.0f} s, {self.left():.0f} s left",
                  **fields)
        return False


# ---------------------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # CPU: the process's peak RSS


def set_tf32(on: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


class Sizes:
    """Model and run sizes: SD1.5 at 512x512 on a GPU, the tiny model at 64x64 in the CPU smoke mode."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.model = "tiny" if smoke else "sd15"
        self.size = 64 if smoke else 512
        self.steps = 2 if smoke else 25
        self.fps = 30.0
        self.context_frames = 8 if smoke else 24
        self.context_overlap = 2 if smoke else 4
        self.durations = [0.3, 0.6] if smoke else [2.0, 10.0]
        self.unet_calls = 2 if smoke else 4

    def train_frames(self, spec_frames: int) -> int:
        return min(spec_frames, 3) if self.smoke else spec_frames

    def train_batch(self, spec_batch: int) -> int:
        return min(spec_batch, 2) if self.smoke else spec_batch


# ---------------------------------------------------------------------------------------------------------------
def build_audio_encoder(sizes: Sizes, device: torch.device, workdir: Path):
    """A random wav2vec2 saved to a local folder (base architecture at full size, a tiny one in smoke mode)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from vexpress.audio.encoders import Wav2Vec2Encoder

    folder = workdir / "wav2vec2-random"
    if not (folder / "config.json").is_file():
        if sizes.smoke:
            cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 conv_dim=(16, 16, 16, 16, 16, 16, 16), num_conv_pos_embeddings=16,
                                 num_conv_pos_embedding_groups=2)
        else:
            cfg = Wav2Vec2Config()  # the wav2vec2-base architecture
        torch.manual_seed(0)
        Wav2Vec2Model(cfg).save_pretrained(str(folder))
    return Wav2Vec2Encoder(folder, device=device)


def build_pipeline(sizes: Sizes, device: torch.device, encoder):
    from vexpress.models import VExpressConfig, VExpressNet
    from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

    sys.path.insert(0, str(HERE))
    from bench_generate import sd_vae

    dim = int(encoder.dim)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: seconds instead of minutes for 2.2 B parameters
        if sizes.smoke:
            net = VExpressNet(VExpressConfig.tiny(audio_embedding_dim=dim))
            vae = VExpressPipeline.tiny(device=device).vae  # the tiny model's own 64x64-capable VAE
        else:
            net = VExpressNet(VExpressConfig.sd15(audio_embedding_dim=dim))
            vae = sd_vae()
    return VExpressPipeline(net, vae, encoder, device=device, dtype=torch.float32)


def cast_pipeline(pipe, dtype: torch.dtype) -> None:
    pipe.net.to(dtype=dtype)
    pipe.vae.to(dtype=dtype)
    pipe.dtype = dtype


def synthetic_inputs(duration: float, size: int, fps: float):
    sys.path.insert(0, str(HERE))
    from bench_generate import synthetic_inputs as make

    return make(duration, size, fps)


# ---------------------------------------------------------------------------------------------------------------
def check_env(rep: Report, device: torch.device) -> None:
    import importlib.util

    fields = {"torch": torch.__version__, "device": str(device), "cuda": torch.version.cuda}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        fields.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                      capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
    for mod in ("diffusers", "transformers", "bitsandbytes", "lightning"):
        if importlib.util.find_spec(mod) is not None:
            try:
                fields[mod] = __import__(mod).__version__
            except Exception as err:  # noqa: BLE001 - a broken optional package is worth reporting, not fatal
                fields[mod] = f"import failed: {err}"
        else:
            fields[mod] = None
    rep.emit("env", **fields)


def check_parity(rep: Report, device: torch.device, parity_dir: Path) -> None:
    """Single forwards and the sampling loop against the official vectors, on ``device`` in float32, TF32 off."""
    from safetensors.torch import load_file

    from vexpress.audio.windows import audio_windows
    from vexpress.kps.draw import draw_kps_sequence
    from vexpress.models import DropMask, VExpressConfig, VExpressNet
    from vexpress.models.weights import load_official
    from vexpress.pipelines.guidance import Guidance
    from vexpress.pipelines.schedulers import make_scheduler
    from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

    if not (parity_dir / "config.json").is_file():
        rep.emit("parity", "skipped", reason=f"no parity vectors at {parity_dir} (--parity-dir)")
        return
    set_tf32(False)
    cfg = json.loads((parity_dir / "config.json").read_text())
    single, sampling, sizes = cfg["single_forward"], cfg["sampling"], cfg["sizes"]
    net = VExpressNet(VExpressConfig.from_json(parity_dir / "config.json"))
    load_official(net, parity_dir)
    net = net.to(device).eval()
    io = {k: v.to(device) for k, v in load_file(str(parity_dir / "inputs_outputs.safetensors")).items()}

    def rel(ours, ref):
        ours, ref = ours.detach().double(), ref.detach().double()
        scale = ref.abs().max().item()
        return (ours - ref).abs().max().item() / (scale or 1.0)

    errs: dict[str, float] = {}
    t0 = time.perf_counter()
    with torch.no_grad():
        h, w = int(sizes["image_height"]), int(sizes["image_width"])
        frames = int(sizes["frames"])
        pad = int(single.get("num_pad_audio_frames", 2))
        errs["kps_images"] = rel(draw_kps_sequence(h, w, io["kps_coords"].cpu())[None].to(device), io["kps_images"])
        errs["audio_windows"] = rel(audio_windows(io["wav2vec_like"], frames, num_pad=pad), io["audio_windows"])
        errs["kps_features"] = rel(net.encode_kps(io["kps_images"]), io["kps_features"])
        errs["audio_tokens"] = rel(net.encode_audio(io["audio_windows"][None])[0], io["audio_tokens"])
        bank = net.encode_reference(io["ref_latents"])
        errs["ref_bank"] = max(rel(bank.features[k[len("ref_bank."):]], v) for k, v in io.items()
                               if k.startswith("ref_bank."))

        # a partial rather than a closure over net/io/bank, which the `del` at the end releases
        unet = functools.partial(net.denoising_unet, io["noisy_latents"], io["timestep"],
                                 audio_tokens=io["audio_tokens"][None], kps_features=io["kps_features"], reference=bank)

        errs["unet_out_cond"] = rel(unet(), io["unet_out_cond"])
        errs["unet_out_weighted"] = rel(unet(reference_attention_weight=single["reference_attention_weight"],
                                             audio_attention_weight=single["audio_attention_weight"]),
                                        io["unet_out_weighted"])
        errs["unet_out_uncond"] = rel(unet(drop=DropMask.all(1, device)), io["unet_out_uncond"])

        pipe = VExpressPipeline(net, device=device, dtype=torch.float32)
        num_frames = io["init_noise"].shape[2]
        lh, lw = (s * net.config.latent_downscale for s in io["init_noise"].shape[-2:])
        audio = pipe.encode_audio(io["long_wav2vec_like"], num_frames, features=True)
        kps = pipe.encode_kps(io["long_kps_coords"].cpu(), lh, lw)
        latents = pipe.denoise(
            io["init_noise"].clone(), bank, audio, kps, guidance=Guidance(float(sampling["guidance_scale"])),
            scheduler=make_scheduler("ddim"), num_inference_steps=int(sampling["num_inference_steps"]),
            context_frames=int(sampling["context_frames"]), context_overlap=int(sampling["context_overlap"]),
            reference_attention_weight=float(sampling["reference_attention_weight"]),
            audio_attention_weight=float(sampling["audio_attention_weight"]), progress=False)
        errs["final_latents"] = rel(latents, io["final_latents"])
    sync(device)
    worst = max(errs.values())
    rep.emit("parity", "ok" if worst <= 1e-4 else "error", set=cfg.get("set", parity_dir.name), tf32=False,
             worst_rel_err=worst, tolerance=1e-4, rel_err={k: float(f"{v:.3g}") for k, v in errs.items()},
             seconds=round(time.perf_counter() - t0, 2))
    del net, pipe, io, bank, unet
    reset_peak(device)


def unet_call_ms(pipe, sizes: Sizes, calls: int) -> tuple[float, int | None]:
    """Milliseconds per guided denoiser call of one full context window (after one warm-up call)."""
    from vexpress.pipelines.guidance import Guidance
    from vexpress.pipelines.schedulers import make_scheduler

    device = pipe.device
    frames = sizes.context_frames
    inputs = synthetic_inputs(frames / sizes.fps, sizes.size, sizes.fps)
    with torch.no_grad():
        bank, _ = pipe.encode_reference(inputs.reference.image)
        audio = pipe.encode_audio(inputs.waveform, frames)
        kps = pipe.encode_kps(inputs.kps, sizes.size, sizes.size)

        def run(steps: int) -> None:
            latents = pipe.prepare_latents(frames, sizes.size, sizes.size, 0)
            pipe.denoise(latents, bank, audio, kps, num_inference_steps=steps, guidance=Guidance(3.5),
                         context_frames=frames, context_overlap=0, reference_attention_weight=0.95,
                         audio_attention_weight=3.0, scheduler=make_scheduler("ddim"), progress=False)

        run(1)  # warm-up (kernel selection, allocator, compilation)
        reset_peak(device)
        t0 = time.perf_counter()
        run(calls)
        sync(device)
        ms = (time.perf_counter() - t0) * 1000.0 / calls
    return ms, peak_bytes(device)


def check_unet_calls(rep: Report, pipe, sizes: Sizes, dtypes: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in dtypes:
        if pipe.device.type == "cpu" and name in ("tf32", "fp16"):
            continue  # no TF32 on a CPU, and fp16 matmuls there are emulated (slow, and not what anyone runs)
        est = 3 * (sizes.unet_calls + 1) * out.get("fp32", 3000.0 if not sizes.smoke else 200.0) / 1000.0
        if name != "fp32" and "fp32" in out:
            est = est / 3
        if not rep.fits("unet_call", est, dtype=name):
            continue
        try:
            set_tf32(name == "tf32")
            cast_pipeline(pipe, DTYPES[name])
            ms, peak = unet_call_ms(pipe, sizes, sizes.unet_calls)
            out[name] = ms
            rep.emit("unet_call", dtype=name, ms_per_call=round(ms, 2), frames_per_call=sizes.context_frames,
                     batch=2 * sizes.context_frames, size=sizes.size, peak_bytes=peak,
                     projected_frames_per_s_25_steps=round(
                         (sizes.context_frames - sizes.context_overlap) / (25 * ms / 1000.0), 3))
        except Exception as err:  # noqa: BLE001 - report and go on with the next check
            rep.emit("unet_call", "error", dtype=name, error=f"{type(err).__name__}: {err}",
                     where=traceback.format_exc(limit=-2))
        finally:
            set_tf32(False)
    return out


def check_generate(rep: Report, pipe, sizes: Sizes, dtype: str, duration: float, ms_per_call: float | None) -> None:
    from vexpress.pipelines.context import context_windows

    frames = max(1, int(round(duration * sizes.fps)))
    windows = len(context_windows(frames, sizes.context_frames, sizes.context_overlap))
    est = 20.0 + (windows * sizes.steps * ms_per_call / 1000.0 * 1.15 if ms_per_call else 60.0)
    if not rep.fits("generate", est, dtype=dtype, audio_s=duration):
        return
    try:
        cast_pipeline(pipe, DTYPES[dtype])
        inputs = synthetic_inputs(duration, sizes.size, sizes.fps)
        reset_peak(pipe.device)
        t0 = time.perf_counter()
        out = pipe.generate(inputs, num_inference_steps=sizes.steps, context_frames=sizes.context_frames,
                            context_overlap=sizes.context_overlap, return_frames=False, progress=False)
        sync(pipe.device)
        seconds = time.perf_counter() - t0
        rep.emit("generate", dtype=dtype, audio_s=duration, frames=out.num_frames, windows=out.info["windows"],
                 steps=sizes.steps, size=sizes.size, seconds=round(seconds, 2),
                 frames_per_s=round(out.num_frames / seconds, 3),
                 denoise_s=round(out.info["seconds"]["denoise"], 2),
                 decode_s=round(out.info["seconds"]["decode_write"], 2), peak_bytes=peak_bytes(pipe.device),
                 estimated_s=round(est, 1))
    except Exception as err:  # noqa: BLE001
        rep.emit("generate", "error", dtype=dtype, audio_s=duration, error=f"{type(err).__name__}: {err}",
                 where=traceback.format_exc(limit=-2))


def check_compile(rep: Report, pipe, sizes: Sizes, dtype: str) -> None:
    if pipe.device.type != "cuda":
        rep.emit("compile", "skipped", reason="torch.compile is measured on CUDA only")
        return
    if not rep.fits("compile", 150.0, dtype=dtype):
        return
    original = pipe.net.denoising_unet
    try:
        cast_pipeline(pipe, DTYPES[dtype])
        pipe.net.denoising_unet = torch.compile(original)
        t0 = time.perf_counter()
        ms_first, _ = unet_call_ms(pipe, sizes, 1)  # includes compilation
        compile_s = time.perf_counter() - t0
        ms, peak = unet_call_ms(pipe, sizes, sizes.unet_calls)
        rep.emit("compile", dtype=dtype, compile_and_first_calls_s=round(compile_s, 1), ms_per_call=round(ms, 2),
                 peak_bytes=peak, frames_per_call=sizes.context_frames)
    except Exception as err:  # noqa: BLE001
        rep.emit("compile", "error", dtype=dtype, error=f"{type(err).__name__}: {err}",
                 where=traceback.format_exc(limit=-2))
    finally:
        pipe.net.denoising_unet = original


def load_stage(name: str):
    import yaml

    from vexpress.training.stages import StageSpec

    data = yaml.safe_load((ROOT / "conf" / "stage" / f"{name}.yaml").read_text())
    data.pop("_target_", None)
    return StageSpec(**data)


def training_batch(sizes: Sizes, frames: int, batch: int, audio_dim: int, latent_downscale: int,
                   device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    s, h = sizes.size, sizes.size // latent_downscale
    lip = torch.zeros(batch, 1, frames, h, h)
    lip[..., h // 2:, h // 4: 3 * h // 4] = 1.0
    b = {"kps_images": torch.rand(batch, 3, frames, s, s, generator=g),
         "audio_windows": torch.randn(batch, frames, 10, audio_dim, generator=g),
         "target_latents": torch.randn(batch, 4, frames, h, h, generator=g),
         "reference_latents": torch.randn(batch, 4, h, h, generator=g), "lip_masks": lip}
    return {k: v.to(device) for k, v in b.items()}


def check_train(rep: Report, sizes: Sizes, device: torch.device, stage_name: str, audio_dim: int) -> None:
    from functools import partial

    from diffusers import DDPMScheduler

    from vexpress.models import DropMask, VExpressConfig, VExpressNet
    from vexpress.training.lit_module import VExpressLitModule
    from vexpress.training.optim import adamw
    from vexpress.training.stages import apply_stage

    if not rep.fits("train", 60.0 if not sizes.smoke else 10.0, stage=stage_name):
        return
    lit = net = opt = batch = None
    try:
        spec = load_stage(stage_name)
        frames, bsz = sizes.train_frames(spec.num_frames), sizes.train_batch(spec.batch_size)
        reset_peak(device)
        base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        torch.manual_seed(0)
        with torch.device(device):
            cfg = (VExpressConfig.tiny(audio_embedding_dim=audio_dim) if sizes.smoke
                   else VExpressConfig.sd15(audio_embedding_dim=audio_dim))
            net = VExpressNet(cfg)
        report = apply_stage(net, spec)
        sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", steps_offset=1, clip_sample=False,
                              rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction")
        lit = VExpressLitModule(net, sched, optimizer=partial(adamw, lr=spec.lr, use_8bit=True)).to(device)
        lit.train()
        opt = lit.configure_optimizers()
        opt = opt["optimizer"] if isinstance(opt, dict) else opt
        batch = training_batch(sizes, frames, bsz, audio_dim, net.config.latent_downscale, device)
        use_amp = device.type == "cuda"
        times, losses = [], []
        for step in range(2):  # the first step allocates optimizer states and selects kernels
            sync(device)
            t0 = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = lit.diffusion_step(batch, lit.train_generator(), DropMask.none(bsz, device))
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync(device)
            times.append(time.perf_counter() - t0)
            losses.append(float(out.loss.detach()))
        peak = peak_bytes(device)
        rep.emit("train", "ok" if all(math.isfinite(x) for x in losses) else "error", stage=stage_name,
                 frames=frames, batch=bsz, size=sizes.size, amp="bf16" if use_amp else "fp32",
                 gradient_checkpointing=bool(spec.gradient_checkpointing), optimizer=type(opt).__module__ + "."
                 + type(opt).__name__, trainable_params=report.num_trainable, frozen_params=report.num_frozen,
                 first_step_s=round(times[0], 3), step_s=round(times[1], 3), loss=losses,
                 peak_bytes=peak, peak_over_start_bytes=(peak - base) if device.type == "cuda" else None)
    except Exception as err:  # noqa: BLE001
        rep.emit("train", "error", stage=stage_name, error=f"{type(err).__name__}: {err}",
                 where=traceback.format_exc(limit=-3))
    finally:
        del lit, net, opt, batch
        reset_peak(device)


# ---------------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model and sizes on the CPU (for the test)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="skip checks that would not fit (seconds)")
    parser.add_argument("--out", default=None, help="append the JSON lines to this file too")
    parser.add_argument("--parity-dir", default=None, help="official vector set (default: shared/parity/dev)")
    parser.add_argument("--checks", default="env,parity,unet_call,generate,train,compile",
                        help="comma-separated subset of the checks")
    parser.add_argument("--generate", default=None,
                        help="override the generation plan: dtype:seconds pairs, e.g. fp32:2,fp16:10")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT / "src"))
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print(json.dumps({"check": "env", "status": "error",
                          "error": "no CUDA device; run with --cpu-smoke for the CPU version"}), flush=True)
        return 2
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    sizes = Sizes(args.cpu_smoke)
    rep = Report(args.out, args.budget_s)
    checks = set(args.checks.split(","))
    from vexpress.utils.paths import parity_dir

    pdir = Path(args.parity_dir) if args.parity_dir else parity_dir()

    if "env" in checks:
        check_env(rep, device)
    if "parity" in checks:
        try:
            check_parity(rep, device, pdir)
        except Exception as err:  # noqa: BLE001
            rep.emit("parity", "error", error=f"{type(err).__name__}: {err}", where=traceback.format_exc(limit=-3))
    with tempfile.TemporaryDirectory(prefix="vexpress-gpu-check-") as tmp:
        encoder = build_audio_encoder(sizes, device, Path(tmp))
        dim = int(encoder.dim)
        pipe = None
        ms: dict[str, float] = {}
        if checks & {"unet_call", "generate", "compile"}:
            t0 = time.perf_counter()
            pipe = build_pipeline(sizes, device, encoder)
            n = sum(p.numel() for p in pipe.net.parameters())
            rep.emit("build", model=sizes.model, parameters=n, seconds=round(time.perf_counter() - t0, 2))
        if "unet_call" in checks:
            ms = check_unet_calls(rep, pipe, sizes, ["fp32", "tf32", "fp16", "bf16"])
        plan_generate = [("bf16", sizes.durations[0])] if device.type == "cuda" else [("fp32", sizes.durations[0])]
        if args.generate:  # an explicit plan replaces the default order
            for pair in args.generate.split(","):
                dtype, seconds = pair.split(":")
                set_tf32(dtype == "tf32")
                check_generate(rep, pipe, sizes, dtype, float(seconds), ms.get(dtype))
                set_tf32(False)
            checks.discard("generate")
        if "generate" in checks:
            for dtype, duration in plan_generate:
                check_generate(rep, pipe, sizes, dtype, duration, ms.get(dtype))
        if "train" in checks:
            for stage in ("image", "audio_motion", "joint"):
                check_train(rep, sizes, device, stage, dim)
        if "generate" in checks:
            later = ([("bf16", sizes.durations[1]), ("fp16", sizes.durations[0])] if device.type == "cuda"
                     else [("fp32", sizes.durations[1])])
            for dtype, duration in later:
                check_generate(rep, pipe, sizes, dtype, duration, ms.get(dtype))
        if "compile" in checks:
            check_compile(rep, pipe, sizes, "bf16")
        if "generate" in checks and device.type == "cuda":  # the slow precisions last: the budget decides
            for dtype, duration in [("tf32", sizes.durations[0]), ("fp16", sizes.durations[1]),
                                    ("fp32", sizes.durations[0])]:
                set_tf32(dtype == "tf32")
                check_generate(rep, pipe, sizes, dtype, duration, ms.get(dtype))
                set_tf32(False)
    errors = [r for r in rep.rows if r["status"] == "error"]
    rep.emit("summary", "ok" if not errors else "error", checks=len(rep.rows), errors=len(errors),
             skipped=sum(r["status"] == "skipped" for r in rep.rows), total_s=round(time.perf_counter() - rep.t0, 1))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
