"""End to end with a tiny real model (random weights): frame counts, fps, files, guidance, retargeting, samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vexpress.data.video import probe_video
from vexpress.pipelines.guidance import Guidance
from vexpress.pipelines.schedulers import make_scheduler
from vexpress.pipelines.vexpress_pipeline import prepare_inputs

FAST = dict(height=64, width=64, num_inference_steps=1, context_frames=8, context_overlap=2, progress=False)


def test_short_audio_keeps_every_frame_and_writes_an_mp4(tiny_pipe, sample_ref, wav_file, tmp_path):
    audio = wav_file(0.3)  # the official code crashes below 0.8 s
    out = tiny_pipe(sample_ref, audio, fps=25, output_path=tmp_path / "v.mp4", return_frames=True, **FAST)
    assert out.frames.shape == (round(0.3 * 25), 64, 64, 3) and out.frames.dtype == torch.uint8
    info = probe_video(out.path)
    assert info.num_frames == out.frames.shape[0] and info.fps == pytest.approx(25.0) and info.has_audio
    assert out.info["windows"] == 1 and out.info["official_num_frames"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "v.mp4"]  # nothing temporary left


def test_frame_count_and_fps_for_any_length(tiny_pipe, sample_ref, wav_file):
    # 2.13 s at 30 fps: 64 frames kept (the official grid would keep 44 and change the fps)
    out = tiny_pipe(sample_ref, wav_file(2.13), fps=30, num_inference_steps=1, height=64, width=64,
                    context_frames=24, context_overlap=4, median_filter=False, progress=False)
    assert out.frames.shape[0] == round(2.13 * 30) == out.num_frames
    assert out.fps == 30.0 and out.info["official_num_frames"] == 44
    assert out.info["windows"] == 3


def test_silent_audio_is_fine(tiny_pipe, sample_ref, wav_file):
    out = tiny_pipe(sample_ref, wav_file(1.0, silent=True), fps=10, **FAST)
    assert out.frames.shape[0] == 10 and torch.isfinite(out.frames.float()).all()


def test_odd_audio_rate_is_muxed(tiny_pipe, sample_ref, wav_file, tmp_path):
    import av

    out = tiny_pipe(sample_ref, wav_file(0.5, rate=5000), fps=10, output_path=tmp_path / "o.mp4", **FAST)
    with av.open(str(out.path)) as c:
        assert c.streams.audio[0].rate == 48000  # AAC has no 5 kHz mode: resampled for the file only


def test_deterministic_given_the_seed_and_sensitive_to_it(tiny_pipe, sample_ref, wav_file):
    inputs = prepare_inputs(sample_ref, wav_file(0.5), height=64, width=64, fps=12)
    a = tiny_pipe.generate(inputs, seed=3, **{k: v for k, v in FAST.items() if k not in ("height", "width")})
    b = tiny_pipe.generate(inputs, seed=3, **{k: v for k, v in FAST.items() if k not in ("height", "width")})
    c = tiny_pipe.generate(inputs, seed=4, **{k: v for k, v in FAST.items() if k not in ("height", "width")})
    assert torch.equal(a.frames, b.frames) and not torch.equal(a.frames, c.frames)


def test_fix_face_encodes_one_distinct_keypoint_set(tiny_pipe, sample_ref, wav_file):
    out = tiny_pipe(sample_ref, wav_file(0.6), fps=10, **FAST)
    assert out.info["retarget"] == "fix_face" and out.info["distinct_kps"] == 1
    assert np.allclose(out.kps, out.kps[:1])
    assert out.info["branches"] == ["uncond", "cond"]


def test_driving_keypoints_and_retarget(tiny_pipe, sample_ref, wav_file):
    # driving keypoints in 512x512 file coordinates, moving right; naive_retarget by default
    base = np.array([[200.0, 220.0], [300.0, 220.0], [250.0, 280.0]], np.float32)
    drv = np.stack([base + [4.0 * t, 0.0] for t in range(12)])
    out = tiny_pipe(sample_ref, wav_file(1.0), driving=drv, fps=12, **FAST)
    assert out.info["retarget"] == "naive_retarget" and out.num_frames == 12
    assert out.kps[-1, 2, 0] > out.kps[0, 2, 0]  # the head moves right as the driver does
    assert out.info["distinct_kps"] == 12


def test_separate_audio_guidance_runs_three_branches(tiny_pipe, sample_ref, wav_file):
    out = tiny_pipe(sample_ref, wav_file(0.4), fps=10, guidance_scale=2.0, audio_guidance_scale=4.0, **FAST)
    assert out.info["branches"] == ["uncond", "no_audio", "cond"]


@pytest.mark.parametrize("name", ["ddim", "dpmpp", "unipc"])
def test_samplers_denoise_to_finite_latents(tiny_pipe, name):
    g = torch.Generator().manual_seed(0)
    num_frames = 10
    latents = torch.randn(1, 4, num_frames, 8, 8, generator=g)
    bank = tiny_pipe.net.encode_reference(torch.randn(1, 4, 8, 8, generator=g))
    audio = tiny_pipe.encode_audio(torch.randn(30, tiny_pipe.net.config.audio_embedding_dim, generator=g),
                                   num_frames, features=True)
    kps = tiny_pipe.encode_kps(np.tile(np.array([[20.0, 25], [44, 25], [32, 40]], np.float32), (num_frames, 1, 1)),
                               64, 64)
    seen = []
    out = tiny_pipe.denoise(latents, bank, audio, kps, num_inference_steps=4, guidance=Guidance(3.5),
                            context_frames=6, context_overlap=2, scheduler=make_scheduler(name),
                            callback_on_step_end=lambda i, t, x: seen.append(int(t)), progress=False)
    assert out.shape == latents.shape and torch.isfinite(out).all()
    assert len(seen) == 4 and seen[0] == 999


def test_official_ddim_timesteps():
    sched = make_scheduler("ddim")
    sched.set_timesteps(25)
    ts = sched.timesteps.tolist()
    assert ts[0] == 999 and ts[-1] == 39 and ts[1] == 959  # spec §5.1: [999, 959, ..., 79, 39]


def test_reference_keypoints_skip_face_detection(tiny_pipe, wav_file):
    # a drawn "photo" that no face detector accepts, with its keypoints given (as for synthetic clips)
    photo = np.full((96, 128, 3), 80, np.uint8)
    kps = np.array([[50.0, 40.0], [78.0, 40.0], [64.0, 60.0]], np.float32)
    out = tiny_pipe(photo, wav_file(0.4), reference_kps=kps, fps=10, **FAST)
    assert out.info["crop"] == "none" and out.num_frames == 4
    assert np.allclose(out.kps[0], kps * [64 / 128, 64 / 96])  # the photo as framed, resized to 64x64
    cropped = prepare_inputs(photo, wav_file(0.4), reference_kps=kps, crop="face", height=64, width=64, fps=10)
    box = cropped.reference.box
    assert box[0] <= 50 and box[2] >= 78 and box[1] <= 40 and box[3] >= 60  # the crop keeps the face


def test_training_modules_are_left_trainable():
    """A training loop can render samples with its own modules: requires_grad flags and dtype/device are kept."""
    from tests.helpers.tiny import tiny_net
    from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

    net = tiny_net(audio_dim=80).train()
    pipe = VExpressPipeline(net)
    assert pipe.net is net and pipe.dtype == torch.float32 and pipe.device.type == "cpu"
    latents = pipe.denoise(torch.randn(1, 4, 3, 8, 8), net.encode_reference(torch.randn(1, 4, 8, 8)), None, None,
                           num_inference_steps=1, progress=False)
    assert torch.isfinite(latents).all()
    assert all(p.requires_grad for p in net.parameters()) and all(p.grad is None for p in net.parameters())


def test_non_square_output_keeps_width_and_height(tiny_pipe, sample_ref, wav_file):
    """The official code swaps width and height for non-square sizes (resize((H, W))); here they stay put."""
    out = tiny_pipe(sample_ref, wav_file(0.3), height=64, width=96, fps=10, num_inference_steps=1,
                    context_frames=8, context_overlap=2, progress=False)
    assert out.frames.shape[1:] == (64, 96, 3)
    x0, y0, x1, y1 = out.info["crop_box"]
    assert (x1 - x0) / (y1 - y0) == pytest.approx(96 / 64, rel=1e-3)  # the crop has the output's aspect


def test_low_noise_audio_weight_applies_below_its_timestep(tiny_pipe, sample_ref, wav_file, monkeypatch):
    """`audio_attention_weight_low_noise` replaces the audio weight at the steps whose timestep is below
    `low_noise_timestep`; unset, every step gets `audio_attention_weight` (the official rule)."""
    seen = []
    unet = tiny_pipe.net.denoising_unet
    forward = unet.forward

    def recording(sample, timestep, **kw):
        seen.append((int(timestep), kw["audio_attention_weight"]))
        return forward(sample, timestep, **kw)

    monkeypatch.setattr(unet, "forward", recording)
    inputs = prepare_inputs(sample_ref, wav_file(0.5), height=64, width=64, fps=8)
    opts = dict(num_inference_steps=4, context_frames=8, context_overlap=2, progress=False, median_filter=False)
    tiny_pipe.generate(inputs, audio_attention_weight=2.0, audio_attention_weight_low_noise=0.5, **opts)
    steps = make_scheduler("ddim")
    steps.set_timesteps(4)
    expected = [(int(t), 0.5 if int(t) < 500 else 2.0) for t in steps.timesteps]
    assert seen == expected and {w for _, w in seen} == {0.5, 2.0}
    seen.clear()
    tiny_pipe.generate(inputs, audio_attention_weight=2.0, low_noise_timestep=900, **opts)
    assert [w for _, w in seen] == [2.0] * 4


@pytest.mark.parametrize("option", [dict(audio_attention_weight_low_noise=float("nan")),
                                    dict(audio_attention_weight_low_noise="low"),
                                    dict(low_noise_timestep=1500), dict(low_noise_timestep=0.5)])
def test_bad_low_noise_options_are_one_line_errors(tiny_pipe, sample_ref, wav_file, option):
    from vexpress.errors import InputError

    with pytest.raises(InputError, match=next(iter(option))):
        tiny_pipe(sample_ref, wav_file(0.3), fps=10, **FAST, **option)
