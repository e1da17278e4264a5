"""VExpressPipeline: one reference photo + speech (+ optional driving keypoints) -> talking-portrait video.

Steps of :meth:`VExpressPipeline.__call__` (diffusers vocabulary)::

    check_inputs      options and sizes, before any work (and the output path is checked for writability)
    prepare inputs    face crop of the reference, audio decode, driving keypoints -> retargeted (T, 3, 2) sequence
    encode_reference  VAE mean latent -> ReferenceNet bank (once; the bank caches the reference attention K/V)
    encode_audio      audio encoder -> projected audio tokens of every frame (small; once)
    encode_kps        keypoints held as coordinates; V-Kps images drawn and encoded per window, on the device
    prepare_latents   seeded Gaussian noise (T frames), on the device
    denoise           context windows x guidance branches batched in one UNet call per window and step
    decode_latents    VAE decode in chunks -> uint8 frames -> (optional) 3x3x3 median filter -> MP4 writer

Frame count: ``round(duration * fps)`` at exactly ``fps`` (at least 1 frame); nothing is dropped.

Memory: what scales with the video length is the latents (16 kB per frame at 512x512), the audio tokens (~8 kB
per frame) and the keypoint coordinates; everything image-sized exists for one window or one decode chunk at a time.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from vexpress.errors import InputError, ShapeError, WeightsError
from vexpress.pipelines.conditions import AudioCondition, KpsCondition
from vexpress.pipelines.context import context_windows, frame_window_counts, official_grid_length
from vexpress.pipelines.guidance import Guidance
from vexpress.pipelines.schedulers import DEFAULT_STEPS, default_guidance, make_scheduler, sampler_name

log = logging.getLogger("vexpress.generate")

AUDIO_RATE = 16000


@dataclass
class GenerationOutput:
    """Result of one generation.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB on the CPU, or None when the video was streamed to ``path`` only.
        fps: frame rate (exactly the requested one).
        audio: (channels, S) float32 waveform for muxing (the input audio at its own rate), or None.
        sample_rate: sample rate of ``audio``.
        kps: (T, 3, 2) V-Kps keypoints used (output pixels).
        latents: (1, 4, T, h, w) final latents if asked for (``return_latents=True``).
        path: the written video, if any.
        info: timings, windows, guidance branches, notes and warnings.
    """

    frames: torch.Tensor | None
    fps: float
    audio: torch.Tensor | None
    sample_rate: int
    kps: np.ndarray
    latents: torch.Tensor | None = None
    path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.kps.shape[0])


def _resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    table = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp32": torch.float32, "float32": torch.float32}
    if dtype not in table:
        raise InputError(f"unknown dtype {dtype!r}; use auto, fp16, bf16 or fp32")
    return table[dtype]


def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device=cuda was asked for but no CUDA device is available; use device=cpu")
    return dev


def _vae_downscale(vae: Any) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


class VExpressPipeline:
    """Inference pipeline around a :class:`~vexpress.models.VExpressNet`.

    Args:
        net: the network (weights loaded).
        vae: a ``diffusers.AutoencoderKL`` whose downscale equals ``net.config.latent_downscale`` (optional for
            :meth:`denoise`-only use).
        audio_encoder: an object with ``encode(waveform_16k) -> (N, D)`` (``vexpress.audio`` encoders); optional
            when features are passed directly.
        sampler: ``"ddim"`` (official), ``"dpmpp"``, ``"unipc"`` or a diffusers scheduler instance.
        device, dtype: where and in which precision to run (``auto``: CUDA + fp16 if available, else CPU + fp32).
        face_analyzer: callable RGB frame -> faces largest first (default: ``FaceAnalyzer`` created on demand).

    The modules passed in are used in place: moved/cast only when ``device``/``dtype`` differ from theirs (by
    default they keep their own) and switched to ``eval()``; gradients flags are left alone (every computation runs
    under ``torch.no_grad``), so a training loop can render samples with its own modules and call ``train()`` after.
    """

    def __init__(self, net: torch.nn.Module, vae: Any | None = None, audio_encoder: Any | None = None,
                 sampler: str | Any = "ddim", device: torch.device | str | None = None,
                 dtype: torch.dtype | str | None = None, face_analyzer: Callable | None = None):
        self.device = _resolve_device(device if device is not None else net.device)
        self.dtype = _resolve_dtype(dtype if dtype is not None else (net.dtype if device is None else None),
                                    self.device)
        self.net = net.to(device=self.device, dtype=self.dtype).eval()  # no requires_grad change: all under no_grad
        self.vae = None
        if vae is not None:
            if _vae_downscale(vae) != net.config.latent_downscale:
                raise WeightsError(
                    f"the VAE downscales images by {_vae_downscale(vae)} but the network expects latents 1/"
                    f"{net.config.latent_downscale} of the image; use the VAE the model was trained with"
                )
            if int(vae.config.latent_channels) != int(net.denoising_unet.conv_in.in_channels):
                raise WeightsError(f"the VAE has {vae.config.latent_channels} latent channels, the network "
                                   f"{net.denoising_unet.conv_in.in_channels}; use the matching VAE")
            vae = vae.to(self.device)
            if vae.dtype != self.dtype:
                vae = vae.to(dtype=self.dtype)
            self.vae = vae.eval()
        dim = getattr(audio_encoder, "dim", None)
        if dim is not None and int(dim) != net.config.audio_embedding_dim:
            raise WeightsError(
                f"the audio encoder {getattr(audio_encoder, 'name', type(audio_encoder).__name__)} gives {dim}-d "
                f"features but the model was trained on {net.config.audio_embedding_dim}-d ones; use the model's "
                "own audio encoder (wav2vec2-base-960h for the official weights)"
            )
        self.audio_encoder = audio_encoder
        self.sampler = sampler
        self.face_analyzer = face_analyzer

    # ------------------------------------------------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------------------------------------------------
    @classmethod
    def from_export(cls, directory: str | os.PathLike, *, vae: Any | str | os.PathLike | None = None,
                    audio_encoder: Any | Mapping[str, Any] | str | None = None, sampler: str | Any = "ddim",
                    device: torch.device | str | None = None, dtype: torch.dtype | str | None = None
                    ) -> "VExpressPipeline":
        """Pipeline from a training export folder (``vexpress.models.weights.save_export``).

        ``vae``: a VAE object or a local diffusers folder, needed when the export has none. ``audio_encoder``: an
        encoder object or its config; default: the one recorded in the export (log-mel if none is recorded).
        """
        from vexpress.models.weights import load_export

        dev = _resolve_device(device)
        export = load_export(directory, load_vae=vae is None)
        vae_obj = _load_vae(vae) if vae is not None else export.vae
        if vae_obj is None:
            raise WeightsError(f"export {directory} has no VAE; pass vae=/path/to/sd-vae-ft-mse (a local diffusers "
                               "AutoencoderKL folder)")
        encoder = _build_encoder(audio_encoder if audio_encoder is not None else export.audio_encoder, dev)
        return cls(export.net, vae_obj, encoder, sampler=sampler, device=dev, dtype=_resolve_dtype(dtype, dev))

    @classmethod
    def from_official(cls, weights: str | os.PathLike | Mapping[str, str], *, vae: Any | str | os.PathLike,
                      audio_encoder: Any | Mapping[str, Any] | str, config: Any | None = None,
                      sampler: str | Any = "ddim", device: torch.device | str | None = None,
                      dtype: torch.dtype | str | None = None) -> "VExpressPipeline":
        """Pipeline from the official release files (``denoising_unet.bin`` ... ``motion_module.bin``).

        Args:
            weights: folder with the five files, or ``{name: path}``.
            vae: local ``sd-vae-ft-mse`` folder (or a VAE object).
            audio_encoder: local ``wav2vec2-base-960h`` folder, an encoder config, or an encoder object.
            config: network config (default: ``VExpressConfig.sd15()``, the release architecture).
        """
        from vexpress.audio.encoders import check_official_encoder
        from vexpress.models import VExpressConfig, VExpressNet
        from vexpress.models.weights import load_official

        check_official_encoder(audio_encoder)  # the release is wav2vec2-only: refuse others before reading weights
        dev = _resolve_device(device)
        cfg = config if config is not None else VExpressConfig.sd15()
        if not isinstance(cfg, VExpressConfig):
            cfg = VExpressConfig.from_dict(cfg)
        net = VExpressNet(cfg)
        load_official(net, weights)
        if isinstance(audio_encoder, (str, os.PathLike)) and Path(audio_encoder).is_dir():
            audio_encoder = {"name": "wav2vec2", "path": str(audio_encoder)}
        encoder = _build_encoder(audio_encoder, dev)
        return cls(net, _load_vae(vae), encoder, sampler=sampler, device=dev, dtype=_resolve_dtype(dtype, dev))

    @classmethod
    def tiny(cls, seed: int = 0, sampler: str | Any = "ddim", device: torch.device | str | None = "cpu",
             dtype: torch.dtype | str | None = None) -> "VExpressPipeline":
        """A randomly initialised tiny model (``VExpressConfig.tiny``, 64x64-capable tiny VAE, log-mel audio) for
        smoke tests, notebooks and benchmarks. Its videos are noise: it shows the mechanics, not quality."""
        from diffusers import AutoencoderKL

        from vexpress.audio.encoders import LogMelEncoder
        from vexpress.models import VExpressConfig, VExpressNet

        encoder = LogMelEncoder()
        torch.manual_seed(seed)
        net = VExpressNet(VExpressConfig.tiny(audio_embedding_dim=encoder.dim))
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
                            block_out_channels=[8, 16, 16, 16], down_block_types=["DownEncoderBlock2D"] * 4,
                            up_block_types=["UpDecoderBlock2D"] * 4)
        dev = _resolve_device(device)
        return cls(net, vae, encoder, sampler=sampler, device=dev, dtype=_resolve_dtype(dtype, dev))

    @classmethod
    def from_weights(cls, weights: str | os.PathLike, **kwargs: Any) -> "VExpressPipeline":
        """An export folder (has ``vexpress.json``) or a folder of official files."""
        from vexpress.models.weights import EXPORT_MANIFEST

        path = Path(weights)
        if not path.exists():
            raise WeightsError(f"weights not found: {path} (give a training export folder or the folder with the "
                               "official V-Express files)")
        if (path / EXPORT_MANIFEST).is_file():
            kwargs.pop("config", None)
            return cls.from_export(path, **kwargs)
        if kwargs.get("vae") is None or kwargs.get("audio_encoder") is None:
            raise WeightsError(f"{path} holds official weights: also give vae=/path/to/sd-vae-ft-mse and "
                               "audio_encoder.path=/path/to/wav2vec2-base-960h")
        return cls.from_official(path, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    # checks
    # ------------------------------------------------------------------------------------------------------------
    def check_inputs(self, **options: Any) -> None:
        """Validate generation options against this network (see :func:`check_options`)."""
        check_options(latent_downscale=self.net.config.latent_downscale,
                      max_context_frames=self.net.config.max_frames_per_window, **options)

    # ------------------------------------------------------------------------------------------------------------
    # encoders
    # ------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_reference(self, image: torch.Tensor | np.ndarray) -> tuple[Any, torch.Tensor]:
        """Reference (H, W, 3) uint8 RGB -> (ReferenceNet bank, latents (1, 4, h, w)); VAE mean, as the official."""
        if self.vae is None:
            raise WeightsError("this pipeline has no VAE; build it with a VAE to encode reference images")
        x = image if isinstance(image, torch.Tensor) else torch.from_numpy(np.array(image))
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ShapeError(f"reference image must be (H, W, 3) RGB, got {tuple(x.shape)}")
        is_uint8 = x.dtype == torch.uint8
        x = x.to(self.device).permute(2, 0, 1)[None].float()
        x = x / 127.5 - 1.0 if is_uint8 else x * 2.0 - 1.0  # uint8, or float in [0, 1]
        latents = self.vae.encode(x.to(self.vae.dtype)).latent_dist.mean * self.net.config.vae_scaling_factor
        bank = self.net.encode_reference(latents.to(self.dtype))
        return bank, latents

    @torch.no_grad()
    def encode_audio(self, audio: torch.Tensor, num_frames: int, *, features: bool = False) -> AudioCondition:
        """16 kHz mono waveform (or ``features=True``: encoder features (N, D)) -> per-frame audio tokens."""
        if not features:
            if self.audio_encoder is None:
                raise WeightsError("this pipeline has no audio encoder; pass audio_encoder= (log-mel or wav2vec2)")
            audio = self.audio_encoder.encode(audio)
        return AudioCondition(self.net, torch.as_tensor(audio), num_frames, device=self.device, dtype=self.dtype)

    def encode_kps(self, kps: np.ndarray | torch.Tensor, height: int, width: int) -> KpsCondition:
        """(T, 3, 2) keypoints in output pixels -> per-window V-Kps guider features."""
        return KpsCondition(self.net, kps, height, width, device=self.device, dtype=self.dtype)

    def prepare_latents(self, num_frames: int, height: int, width: int,
                        generator: torch.Generator | int | None = 42) -> torch.Tensor:
        """(1, 4, T, h, w) float32 standard-normal latents on the device, drawn on the CPU (device-independent)."""
        if not isinstance(generator, torch.Generator):
            seed = generator if generator is not None else int(torch.randint(0, 2**31 - 1, (1,)).item())
            generator = torch.Generator().manual_seed(int(seed))
        down = self.net.config.latent_downscale
        shape = (1, self.net.denoising_unet.conv_in.in_channels, num_frames, height // down, width // down)
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device)

    # ------------------------------------------------------------------------------------------------------------
    # sampling loop
    # ------------------------------------------------------------------------------------------------------------
    def make_scheduler(self, sampler: str | Any | None = None):
        """A fresh scheduler (schedulers are stateful) from a name or a scheduler instance's config."""
        sampler = self.sampler if sampler is None else sampler
        if isinstance(sampler, str):
            return make_scheduler(sampler)
        return type(sampler).from_config(sampler.config)

    @torch.no_grad()
    def denoise(self, latents: torch.Tensor, reference: Any, audio: AudioCondition | None,
                kps: KpsCondition | None, *, num_inference_steps: int = 25, guidance: Guidance | None = None,
                context_frames: int = 24, context_overlap: int = 4, reference_attention_weight: float = 1.0,
                audio_attention_weight: float = 1.0, audio_attention_weight_low_noise: float | None = None,
                low_noise_timestep: int = 500, scheduler: Any | None = None,
                callback_on_step_end: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
                on_model_output: Callable[[int, int, torch.Tensor], None] | None = None,
                progress: bool = True) -> torch.Tensor:
        """Run the sampler over the whole video with overlapping context windows.

        At each timestep every window runs ONE denoiser call whose batch holds the guidance branches
        (:class:`Guidance`); the guided predictions are divided by the number of windows holding each frame and
        summed; then the scheduler steps every frame once. This equals the official ``mean_overlap`` loop (which
        steps each frame right after its last window; all windows of a step see the same ``x_t``).

        Args:
            latents: (1, 4, T, h, w) initial noise (scaled by ``init_noise_sigma`` here).
            reference: ReferenceNet bank (batch 1), or None (reference dropped).
            audio, kps: condition sources (None: that condition is absent for every branch).
            audio_attention_weight_low_noise: the audio attention weight at the steps whose timestep is below
                ``low_noise_timestep`` (None: ``audio_attention_weight`` at every step, as the official code).
                :func:`audio_weight_at` is the rule.
            callback_on_step_end: ``fn(step_index, timestep, latents)`` after every scheduler step.
            on_model_output: ``fn(step_index, window_index, raw_branch_outputs)`` after every denoiser call.
        """
        guidance = guidance if guidance is not None else Guidance()
        scheduler = scheduler if scheduler is not None else self.make_scheduler()
        if latents.ndim != 5 or latents.shape[0] != 1:
            raise ShapeError(f"latents must be (1, C, T, h, w), got {tuple(latents.shape)}")
        num_frames = latents.shape[2]
        for name, cond in (("audio", audio), ("kps", kps)):
            if cond is not None and cond.num_frames != num_frames:
                raise ShapeError(f"{name} condition has {cond.num_frames} frames, latents have {num_frames}")
        windows = context_windows(num_frames, context_frames, context_overlap)
        counts = frame_window_counts(windows, num_frames).to(self.device, torch.float32).view(1, 1, -1, 1, 1)
        branches = guidance.branches
        drop = guidance.drop_mask(self.device)
        nb = len(branches)
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = latents.to(self.device, torch.float32) * scheduler.init_noise_sigma

        bar = _progress(len(scheduler.timesteps) * len(windows), progress, "denoising")
        try:
            for step, t in enumerate(scheduler.timesteps):
                w_audio = audio_weight_at(t, audio_attention_weight, audio_attention_weight_low_noise,
                                          low_noise_timestep)
                total = torch.zeros_like(latents)
                for w, frames in enumerate(windows):
                    sl = slice(frames.start, frames.stop)
                    x = scheduler.scale_model_input(latents[:, :, sl], t).to(self.dtype)
                    f = x.shape[2]
                    tokens = audio.window(frames).expand(nb, -1, -1, -1) if audio is not None else None
                    feats = kps.window(frames) if kps is not None else None
                    feats = feats.expand(nb, -1, -1, -1, -1) if feats is not None else None
                    out = self.net.denoising_unet(
                        x.expand(nb, -1, -1, -1, -1), t, audio_tokens=tokens, kps_features=feats,
                        reference=reference, drop=drop, reference_attention_weight=reference_attention_weight,
                        audio_attention_weight=w_audio,
                    ).float()
                    if on_model_output is not None:
                        on_model_output(step, w, out)
                    guided = guidance.combine(out)
                    total[:, :, sl] += guided / counts[:, :, sl]
                    del out, guided, tokens, feats
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix_str(f"step {step + 1}/{len(scheduler.timesteps)} window {w + 1}/"
                                            f"{len(windows)} ({f} frames)", refresh=False)
                latents = scheduler.step(total, t, latents, return_dict=False)[0]
                if callback_on_step_end is not None:
                    callback_on_step_end(step, t, latents)
        finally:
            if bar is not None:
                bar.close()
        return latents

    # ------------------------------------------------------------------------------------------------------------
    # decoding
    # ------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 8, progress: bool = False,
                       to_cpu: bool = True) -> Iterator[torch.Tensor]:
        """Yield (F, H, W, 3) uint8 RGB frame chunks (on the CPU, or on the device with ``to_cpu=False``),
        decoding ``chunk_size`` frames at a time.

        The VAE itself sees at most :meth:`vae_frames_per_call` frames per call (its last block holds several
        128-channel full-resolution tensors per frame: ~0.6 GB per 512x512 frame in fp32), so a chunk's peak memory
        does not grow with ``chunk_size``; the chunk is the unit of the median filter and of writing."""
        if self.vae is None:
            raise WeightsError("this pipeline has no VAE; build it with a VAE to decode latents")
        num_frames = latents.shape[2]
        scale = self.net.config.vae_scaling_factor
        down = self.net.config.latent_downscale
        per_call = self.vae_frames_per_call(latents.shape[-2] * down, latents.shape[-1] * down)
        bar = _progress(num_frames, progress, "decoding")
        try:
            for start in range(0, num_frames, chunk_size):
                z = latents[0, :, start:start + chunk_size].permute(1, 0, 2, 3)  # (F, 4, h, w)
                img = torch.empty((z.shape[0], z.shape[2] * down, z.shape[3] * down, 3), dtype=torch.uint8,
                                  device=z.device)
                for s in range(0, z.shape[0], per_call):
                    part = self.vae.decode((z[s:s + per_call] / scale).to(self.vae.dtype)).sample
                    part = ((part.float() / 2 + 0.5).clamp(0, 1) * 255.0).round().to(torch.uint8)
                    img[s:s + per_call] = part.permute(0, 2, 3, 1)
                    del part
                yield img.cpu() if to_cpu else img
                if bar is not None:
                    bar.update(z.shape[0])
        finally:
            if bar is not None:
                bar.close()

    #: bytes of one full-resolution VAE decoder activation allowed per VAE call (frames x channels x H x W); at
    #: 128 MiB a 512x512 fp32 decode takes one frame per call, as the official pipeline decodes
    vae_call_bytes = 128 * 2**20

    def vae_frames_per_call(self, height: int, width: int) -> int:
        """Frames per VAE decode call so that one last-block activation stays under :attr:`vae_call_bytes`
        (sd-vae-ft-mse at 512x512: 1 frame in fp32, 2 in fp16/bf16; at 128x128: 16 in fp32)."""
        channels = min(getattr(self.vae.config, "block_out_channels", [128]))
        per_frame = channels * height * width * torch.finfo(self.vae.dtype).bits // 8
        return max(1, int(self.vae_call_bytes // max(1, per_frame)))

    # ------------------------------------------------------------------------------------------------------------
    # end to end
    # ------------------------------------------------------------------------------------------------------------
    def __call__(self, reference_image: Any, audio: Any, *, driving: Any | None = None,
                 kps: np.ndarray | torch.Tensor | None = None, retarget: str | None = None,
                 height: int = 512, width: int = 512, fps: float = 30.0, crop: str = "auto",
                 crop_scale: float | None = None, reference_kps: np.ndarray | torch.Tensor | None = None,
                 output_path: str | os.PathLike | None = None, **options: Any) -> GenerationOutput:
        """Generate a talking-portrait video.

        Args:
            reference_image: photo path, PIL image or (H, W, 3) uint8 array, any size and aspect.
            audio: audio/video path (any format PyAV decodes), a 16 kHz mono waveform, or ``(waveform, rate)``.
            driving: video path, keypoint file (ours or the official ``kps.pth``, 512x512 coordinates) or a
                (L, 3, 2) keypoint array in 512x512 coordinates.
            kps: driving keypoints (L, 3, 2) already in output pixels (e.g. from a preprocessed record).
            retarget: ``fix_face``, ``no_retarget``, ``offset_retarget``, ``naive_retarget``; default
                ``fix_face`` without driving keypoints, ``naive_retarget`` with them.
            height, width, fps: output size and frame rate; the video has ``round(duration * fps)`` frames.
            crop: ``face`` (crop around the face), ``none`` (use the photo as framed) or ``auto`` (``face``
                unless keypoint-file driving with ``no_retarget``, which refers to the photo as framed).
            crop_scale: crop side / face-box side (default 1.9, the official samples' framing).
            reference_kps: the photo's (3, 2) keypoints in its own pixels; skips face detection (for frames of
                preprocessed clips or drawn faces).
            output_path: write an H.264 + AAC MP4 here (atomically; checked for writability before any work).
            **options: sampling and output options of :meth:`generate` (``num_inference_steps``,
                ``guidance_scale``, ``audio_guidance_scale``, ``reference_attention_weight``,
                ``audio_attention_weight``, ``audio_attention_weight_low_noise``, ``low_noise_timestep``,
                ``context_frames``, ``context_overlap``, ``seed``, ``sampler``,
                ``median_filter``, ``decode_chunk_size``, ``return_frames``, ``return_latents``, ``progress``).
        """
        self.check_inputs(height=height, width=width, fps=fps, retarget=retarget,
                          **{k: v for k, v in options.items() if k in CHECKED_OPTIONS})
        out_path = None
        if output_path is not None:
            from vexpress.utils.io import check_writable

            out_path = check_writable(output_path, "output video")
        inputs = prepare_inputs(reference_image, audio, driving=driving, kps=kps, retarget=retarget,
                                height=height, width=width, fps=fps, crop=crop, crop_scale=crop_scale,
                                reference_kps=reference_kps, face_analyzer=self.face_analyzer)
        return self.generate(inputs, output_path=out_path, **options)

    def generate(self, inputs: "PreparedInputs", *, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, audio_guidance_scale: float | None = None,
                 reference_attention_weight: float = 0.95, audio_attention_weight: float = 3.0,
                 audio_attention_weight_low_noise: float | None = None, low_noise_timestep: int = 500,
                 context_frames: int = 24, context_overlap: int = 4, seed: int | torch.Generator | None = 42,
                 sampler: str | Any | None = None, median_filter: bool = True, decode_chunk_size: int = 8,
                 output_path: str | os.PathLike | None = None, crf: int = 18, return_frames: bool | None = None,
                 return_latents: bool = False, progress: bool = True) -> GenerationOutput:
        """Generate from prepared inputs (:func:`prepare_inputs`); see :meth:`__call__` for the options.

        ``num_inference_steps`` defaults to 25 for DDIM, 12 for DPM-Solver++, 10 for UniPC, 4 for LCM.
        ``guidance_scale`` defaults to 3.5, and to 1 (off, one branch) for ``lcm`` (a distilled student). Official
        sampling
        defaults: guidance 3.5 (same for audio), reference / audio attention weights 0.95 / 3.0, windows 24 / 4,
        seed 42, median filter on.
        """
        t0 = time.perf_counter()
        sampler = self.sampler if sampler is None else sampler
        name = sampler if isinstance(sampler, str) else sampler_name(sampler)
        steps = num_inference_steps if num_inference_steps is not None else DEFAULT_STEPS.get(name, 25)
        if guidance_scale is None:
            guidance_scale = default_guidance(name)
        guidance = Guidance(float(guidance_scale), None if audio_guidance_scale is None
                            else float(audio_guidance_scale))
        height, width, fps, num_frames = inputs.height, inputs.width, inputs.fps, inputs.num_frames
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        self.check_inputs(height=height, width=width, fps=fps, num_inference_steps=steps,
                          context_frames=context_frames, context_overlap=context_overlap,
                          reference_attention_weight=reference_attention_weight,
                          audio_attention_weight=audio_attention_weight,
                          audio_attention_weight_low_noise=audio_attention_weight_low_noise,
                          low_noise_timestep=low_noise_timestep, decode_chunk_size=decode_chunk_size)
        if self.vae is None:
            raise WeightsError("this pipeline has no VAE; build it with one (from_export / from_official)")
        out_path = None
        if output_path is not None:
            from vexpress.utils.io import check_writable

            out_path = check_writable(output_path, "output video")

        # ---- conditions ------------------------------------------------------------------------------------
        bank, _ = self.encode_reference(inputs.reference.image)
        audio_cond = self.encode_audio(inputs.waveform, num_frames)
        kps_cond = self.encode_kps(inputs.kps, height, width)
        latents = self.prepare_latents(num_frames, height, width, seed)
        t_enc = time.perf_counter()

        # ---- sampling --------------------------------------------------------------------------------------
        latents = self.denoise(
            latents, bank, audio_cond, kps_cond, num_inference_steps=steps, guidance=guidance,
            context_frames=context_frames, context_overlap=context_overlap,
            reference_attention_weight=reference_attention_weight, audio_attention_weight=audio_attention_weight,
            audio_attention_weight_low_noise=audio_attention_weight_low_noise, low_noise_timestep=low_noise_timestep,
            scheduler=_seeded(self.make_scheduler(sampler), seed), progress=progress,
        )
        distinct = kps_cond.num_distinct
        del bank, audio_cond, kps_cond
        t_denoise = time.perf_counter()

        # ---- decoding + writing ----------------------------------------------------------------------------
        keep = return_frames if return_frames is not None else out_path is None
        # decode and filter on the device (the median is fast there), then hand uint8 chunks to the host
        chunks: Iterator[torch.Tensor] = self.decode_latents(latents, decode_chunk_size, progress=progress,
                                                             to_cpu=False)
        if median_filter:
            from vexpress.pipelines.postprocess import iter_median_filtered

            chunks = iter_median_filtered(chunks, num_frames, decode_chunk_size)
        chunks = (chunk.cpu() for chunk in chunks)
        kept: list[torch.Tensor] = []
        if out_path is not None:
            from vexpress.pipelines.video_io import VideoWriter

            with VideoWriter(out_path, fps, width, height, inputs.mux_audio, inputs.mux_rate, crf=crf) as writer:
                for chunk in chunks:
                    writer.write(chunk)
                    if keep:
                        kept.append(chunk)
        else:
            kept = list(chunks)
        frames = torch.cat(kept) if keep and kept else None
        t_end = time.perf_counter()

        info = {
            **inputs.info(),
            "windows": len(context_windows(num_frames, context_frames, context_overlap)),
            "official_num_frames": official_grid_length(inputs.duration, fps, context_frames, context_overlap),
            "branches": list(guidance.branches), "sampler": name, "steps": steps, "distinct_kps": distinct,
            "seed": seed if isinstance(seed, int) else None,
            "seconds": {"inputs": inputs.seconds, "encode": t_enc - t0, "denoise": t_denoise - t_enc,
                        "decode_write": t_end - t_denoise, "total": inputs.seconds + t_end - t0},
        }
        log.info("generated %d frames at %g fps in %.1f s (%.3f frames/s)", num_frames, fps,
                 info["seconds"]["total"], num_frames / max(info["seconds"]["total"], 1e-9))
        mux = torch.from_numpy(np.ascontiguousarray(inputs.mux_audio)) if inputs.mux_audio is not None else None
        return GenerationOutput(frames=frames, fps=float(fps), audio=mux, sample_rate=inputs.mux_rate,
                                kps=inputs.kps, latents=latents if return_latents else None, path=out_path,
                                info=info)


def check_options(*, height: int = 512, width: int = 512, fps: float = 30.0, num_inference_steps: int | None = 25,
                  context_frames: int = 24, context_overlap: int = 4, retarget: str | None = None,
                  reference_attention_weight: float = 1.0, audio_attention_weight: float = 1.0,
                  audio_attention_weight_low_noise: float | None = None, low_noise_timestep: int = 500,
                  decode_chunk_size: int = 8, latent_downscale: int = 8, max_context_frames: int = 32) -> None:
    """Validate generation options (one-line :class:`InputError` naming the option and the fix); needs no model."""
    from vexpress.kps.retarget import STRATEGIES

    down = int(latent_downscale)
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or value < 8 * down or value % max(down, 2):
            raise InputError(f"{name}={value} is not supported: use a multiple of {max(down, 2)} of at least "
                             f"{8 * down} pixels (512 for the official model)")
    if not (isinstance(fps, (int, float, np.number)) and 1.0 <= float(fps) <= 120.0):
        raise InputError(f"fps={fps} is out of range; use a frame rate between 1 and 120 (official: 30)")
    if num_inference_steps is not None and (not isinstance(num_inference_steps, (int, np.integer))
                                            or num_inference_steps < 1):
        raise InputError(f"num_inference_steps={num_inference_steps} must be a positive integer")
    if not isinstance(context_frames, (int, np.integer)) or not 1 <= context_frames <= max_context_frames:
        raise InputError(f"context_frames={context_frames} must be in [1, {max_context_frames}] (the motion "
                         "modules' positional encoding length); official: 24")
    if not isinstance(context_overlap, (int, np.integer)) or not 0 <= context_overlap < context_frames:
        raise InputError(f"context_overlap={context_overlap} must be in [0, context_frames); official: 4")
    if retarget is not None and retarget not in STRATEGIES:
        raise InputError(f"unknown retarget strategy {retarget!r}; choose one of {', '.join(STRATEGIES)}")
    for name, value in (("reference_attention_weight", reference_attention_weight),
                        ("audio_attention_weight", audio_attention_weight),
                        ("audio_attention_weight_low_noise", audio_attention_weight_low_noise)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
                                  or not math.isfinite(float(value))):
            raise InputError(f"{name} must be a finite number, got {value!r}")
    if (isinstance(low_noise_timestep, bool) or not isinstance(low_noise_timestep, (int, np.integer))
            or not 0 <= low_noise_timestep <= 1000):
        raise InputError(f"low_noise_timestep={low_noise_timestep!r} must be an integer timestep in [0, 1000] "
                         "(default 500)")
    if not isinstance(decode_chunk_size, (int, np.integer)) or decode_chunk_size < 1:
        raise InputError(f"decode_chunk_size={decode_chunk_size} must be a positive integer")


#: The sampling options :func:`check_options` validates (besides size, fps and retarget): one list for the pipeline
#: and the CLI.
CHECKED_OPTIONS = ("num_inference_steps", "context_frames", "context_overlap", "reference_attention_weight",
                   "audio_attention_weight", "audio_attention_weight_low_noise", "low_noise_timestep",
                   "decode_chunk_size")


def audio_weight_at(timestep: Any, weight: float, weight_low_noise: float | None = None,
                    low_noise_timestep: int = 500) -> float:
    """The audio attention weight of a sampling step: ``weight_low_noise`` when the step's timestep is below
    ``low_noise_timestep`` (and ``weight_low_noise`` is set), else ``weight``.

    The official code uses one weight for every step. In the demo's tiny model the audio attention adds one vector
    per frame, which opens the mouth and also tints the whole frame (experiments/demo/exploration_2026-12-06c.md); a
    lower weight at the low-noise steps, where colours are settled, keeps the tint smaller
    (exploration_2026-12-06d.md)."""
    if weight_low_noise is None:
        return float(weight)
    t = float(timestep.item() if isinstance(timestep, torch.Tensor) else timestep)
    return float(weight_low_noise) if t < low_noise_timestep else float(weight)


# ----------------------------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class PreparedInputs:
    """Everything generation needs from the user's files, made before any model work (cheap to validate)."""

    reference: Any  # vexpress.pipelines.inputs.PreparedReference
    waveform: torch.Tensor  # (S,) 16 kHz mono, for the audio encoder
    mux_audio: np.ndarray | None  # (channels, S) at mux_rate, muxed into the output
    mux_rate: int
    duration: float
    fps: float
    height: int
    width: int
    kps: np.ndarray  # (T, 3, 2) output pixels, after retargeting
    retarget: str
    crop: str
    anchor: int | None = None
    scale: tuple[float, float] | None = None
    missing: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def num_frames(self) -> int:
        return int(self.kps.shape[0])

    def info(self) -> dict[str, Any]:
        return {"num_frames": self.num_frames, "fps": float(self.fps), "duration_s": self.duration,
                "retarget": self.retarget, "crop": self.crop, "crop_box": [float(v) for v in self.reference.box],
                "num_faces": self.reference.num_faces, "anchor_frame": self.anchor, "scale": self.scale,
                "missing_driving_frames": list(self.missing), "notes": list(self.notes)}


def prepare_inputs(reference_image: Any, audio: Any, *, driving: Any | None = None,
                   kps: np.ndarray | torch.Tensor | None = None, retarget: str | None = None, height: int = 512,
                   width: int = 512, fps: float = 30.0, crop: str = "auto", crop_scale: float | None = None,
                   reference_kps: np.ndarray | torch.Tensor | None = None,
                   face_analyzer: Callable | None = None) -> PreparedInputs:
    """Load and check the user's inputs (no network needed): reference crop + keypoints, audio, driving keypoints
    retargeted and resampled to ``round(duration * fps)`` frames. Raises one-line :class:`InputError` s.

    ``reference_kps`` (3, 2), in the photo's pixels, skips face detection (``crop="auto"`` then keeps the photo's
    framing). Other arguments: see :meth:`VExpressPipeline.__call__`."""
    from vexpress.kps.retarget import resample_kps, retarget_kps
    from vexpress.pipelines.inputs import CROP_SCALE, is_kps_file, load_driving, prepare_reference

    t0 = time.perf_counter()
    has_driving = driving is not None or kps is not None
    strategy = retarget if retarget is not None else ("naive_retarget" if has_driving else "fix_face")
    if strategy != "fix_face" and not has_driving:
        raise InputError(f"retarget={strategy} needs a driving video or keypoint file (driving=...); "
                         "use retarget=fix_face for a still head")
    if crop == "auto":
        file_driving = kps is not None or (driving is not None and (
            not isinstance(driving, (str, os.PathLike)) or is_kps_file(driving)))
        crop = "none" if (strategy == "no_retarget" and file_driving) or reference_kps is not None else "face"
    if crop not in ("face", "none"):
        raise InputError(f"crop={crop!r} is not supported; use auto, face or none")
    scale = CROP_SCALE if crop_scale is None else float(crop_scale)  # 0 is refused below, not read as "default"
    if not 1.0 <= scale <= 10.0:
        raise InputError(f"crop_scale={crop_scale} must be between 1 and 10 (crop side / face-box side; 1.9)")

    # audio first (cheap, and its length fixes the frame count), then the photo, then the driving input
    wave16, mux_audio, mux_rate = _load_audio(audio)
    duration = wave16.shape[0] / AUDIO_RATE
    name = audio if isinstance(audio, (str, os.PathLike)) else "the audio"
    if duration < 0.025:
        raise InputError(f"{name} lasts {duration * 1000:.0f} ms; give at least 25 ms of sound")
    num_frames = max(1, int(round(duration * fps)))
    ref_kps = None
    if reference_kps is not None:
        ref_kps = np.asarray(reference_kps.detach().cpu() if hasattr(reference_kps, "detach") else reference_kps,
                             dtype=np.float32)
    ref = prepare_reference(reference_image, width, height, face_analyzer, crop=crop, crop_scale=scale, kps=ref_kps)
    notes = list(ref.notes)
    missing: list[int] = []
    if strategy == "fix_face":
        if has_driving:
            notes.append("retarget=fix_face ignores the driving input (still head)")
        result = retarget_kps("fix_face", ref.kps, num_frames=num_frames)
    else:
        if kps is not None:
            drv_kps = np.asarray(kps.detach().cpu() if hasattr(kps, "detach") else kps, dtype=np.float32)
            drv_fps = None
        else:
            drv = load_driving(driving, width, height, crop=crop, crop_scale=scale, max_seconds=duration + 1.0)
            drv_kps, drv_fps = drv.kps, drv.fps
            notes += drv.notes
            missing = drv.missing
        result = retarget_kps(strategy, ref.kps, resample_kps(drv_kps, num_frames, drv_fps, fps), num_frames)
        notes += result.notes
    return PreparedInputs(reference=ref, waveform=wave16, mux_audio=mux_audio, mux_rate=mux_rate, duration=duration,
                          fps=float(fps), height=int(height), width=int(width), kps=result.kps, retarget=strategy,
                          crop=crop, anchor=result.anchor, scale=result.scale, missing=missing, notes=notes,
                          seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------
def _seeded(scheduler: Any, seed: Any) -> Any:
    """A sampler that injects noise between steps (``lcm``) draws it from a stream seeded with the video's seed."""
    if isinstance(seed, int) and hasattr(scheduler, "manual_seed"):
        scheduler.manual_seed(seed)
    return scheduler


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _load_vae(vae: Any):
    if vae is None or not isinstance(vae, (str, os.PathLike)):
        return vae
    path = Path(vae)
    if not (path / "config.json").is_file():
        raise WeightsError(f"VAE folder {path} has no config.json; give a local diffusers AutoencoderKL folder "
                           "(e.g. sd-vae-ft-mse)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import AutoencoderKL

    try:
        return AutoencoderKL.from_pretrained(str(path), local_files_only=True, low_cpu_mem_usage=False)
    except Exception as err:  # noqa: BLE001
        raise WeightsError(f"cannot load the VAE from {path}: {str(err).splitlines()[0][:160]}") from err


def _build_encoder(spec: Any, device: torch.device):
    if spec is not None and hasattr(spec, "encode"):
        return spec
    from vexpress.audio.encoders import build_audio_encoder

    if isinstance(spec, Mapping) and str(spec.get("name", "")).lower().startswith(("wav2vec", "whisper")) \
            and "device" not in spec:
        spec = {**spec, "device": str(device)}
    return build_audio_encoder(spec)


def _load_audio(audio: Any) -> tuple[torch.Tensor, np.ndarray | None, int]:
    """-> (16 kHz mono waveform for the model, waveform to mux (channels, S), its sample rate)."""
    from vexpress.audio.io import decode_audio, load_audio, resample

    if isinstance(audio, (str, os.PathLike)):
        wave16 = load_audio(audio)
        native, rate = decode_audio(audio)
        if native.shape[0] > 2:
            native = native.mean(0, keepdims=True)
        return (wave16, *_muxable(native, int(rate)))
    rate = AUDIO_RATE
    if isinstance(audio, tuple) and len(audio) == 2:
        audio, rate = audio
    wav = torch.as_tensor(np.asarray(audio.cpu() if hasattr(audio, "cpu") else audio), dtype=torch.float32)
    if wav.ndim == 2:
        mux = wav.numpy() if wav.shape[0] <= 2 else wav.mean(0, keepdim=True).numpy()
        wav = wav.mean(0)
    elif wav.ndim == 1:
        mux = wav[None].numpy()
    else:
        raise InputError(f"audio waveform must be (S,) or (channels, S), got shape {tuple(wav.shape)}")
    if wav.numel() == 0:
        raise InputError("the audio is empty; give at least a fraction of a second of sound")
    wave16 = torch.nan_to_num(resample(wav, int(rate), AUDIO_RATE)).clamp(-1.0, 1.0).contiguous()
    return (wave16, *_muxable(mux, int(rate)))


#: Sample rates the AAC encoder accepts; other rates are resampled to 48 kHz for the output file.
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)


def _muxable(wave: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    if rate in AAC_RATES:
        return np.ascontiguousarray(wave, dtype=np.float32), rate
    from vexpress.audio.io import resample

    out = resample(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), rate, 48000)
    return out.clamp(-1.0, 1.0).numpy(), 48000
