"""The sampling loop against the official ``VExpressPipeline.__call__`` run stored in every parity vector set.

Sets: the shared ``dev`` set, ``tests/parity_sets/*`` and ``$VEXPRESS_PARITY_SETS`` (see ``tests/helpers/parity.py``).
Every setting comes from the set's ``config.json -> sampling`` (video length, steps, guidance scale, context
frames/overlap, attention weights, audio padding), ``sizes`` (image size) and ``scheduler`` (class and kwargs); the
inputs are ``init_noise``, ``long_kps_coords`` (drawn at the set's image size), ``long_wav2vec_like`` and
``ref_latents``. Tolerance: max|ours - ref| <= 1e-4 * max|ref|.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.parity import (
    ParitySet,
    assert_parity,
    official_uniform_windows,
    parity_set_params,
    rel_err,
    sampling_unsupported,
)
from vexpress.pipelines.context import context_windows
from vexpress.pipelines.guidance import Guidance
from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module", params=parity_set_params())
def sset(request):
    """The set's settings and tensors (no weights needed); skips if our loop cannot honour a setting."""
    ps = ParitySet.open(request.param)
    reason = sampling_unsupported(ps)
    if reason:
        pytest.skip(reason=f"{ps.name}: our loop cannot honour {reason}")
    return ps, ps.vectors


@pytest.fixture(scope="module")
def run(sset):
    """The set with its network in a pipeline (skips with the reason when the set's weights are absent)."""
    ps, _ = sset
    if torch.cuda.is_available():  # the vectors are float32 CPU; TF32 alone costs ~1e-3
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    net = ps.load_net(num_padding_audio_frames=ps.sampling["num_pad_audio_frames"])
    pipe = VExpressPipeline(net, device="cpu", dtype=torch.float32)
    return ps, pipe, ps.vectors


def loop_settings(ps: ParitySet, **overrides) -> dict:
    sp = ps.sampling
    settings = dict(num_inference_steps=int(sp["num_inference_steps"]), context_frames=int(sp["context_frames"]),
                    context_overlap=int(sp["context_overlap"]),
                    reference_attention_weight=float(sp["reference_attention_weight"]),
                    audio_attention_weight=float(sp["audio_attention_weight"]),
                    guidance=Guidance(float(sp["guidance_scale"])))
    settings.update(overrides)
    return settings


def sample(ps, pipe, io, ref_latents, **overrides):
    num_frames = int(ps.sampling["video_length"])
    height, width = ps.image_size
    bank = pipe.net.encode_reference(ref_latents)
    audio = pipe.encode_audio(io["long_wav2vec_like"], num_frames, features=True)
    kps = pipe.encode_kps(io["long_kps_coords"], height, width)
    steps, outputs = [], {}
    latents = pipe.denoise(
        io["init_noise"].clone(), bank, audio, kps, scheduler=ps.make_scheduler(),
        callback_on_step_end=lambda i, t, x: steps.append((int(t), x.clone())),
        on_model_output=lambda i, w, out: outputs.setdefault((i, w), out.clone()) if (i, w) == (0, 0) else None,
        progress=False, **loop_settings(ps, **overrides),
    )
    return {"latents": latents, "steps": steps, "first": outputs[(0, 0)], "audio_tokens": audio.tokens}


@pytest.fixture(scope="module")
def official(run):
    ps, pipe, io = run
    with torch.no_grad():
        return sample(ps, pipe, io, io["ref_latents"])


def test_inputs_have_the_configured_shapes(sset):
    ps, io = sset
    (h, w), frames = ps.latent_size, int(ps.sampling["video_length"])
    assert tuple(io["init_noise"].shape) == (1, 4, frames, h, w)
    assert tuple(io["long_kps_coords"].shape) == (frames, 3, 2)
    assert tuple(io["long_wav2vec_like"].shape)[0] == int(ps.sampling["wav2vec_tokens"])
    assert tuple(io["first_unet_call_out"].shape)[2] == min(frames, int(ps.sampling["context_frames"]))


def test_context_windows_match_the_official_schedule(sset):
    ps, _ = sset
    sp = ps.sampling
    frames, size, overlap = int(sp["video_length"]), int(sp["context_frames"]), int(sp["context_overlap"])
    expected = ps.config.get("derived", {}).get("context_queue") or official_uniform_windows(frames, size, overlap)
    assert [list(w) for w in context_windows(frames, size, overlap)] == expected, (
        f"our context windows differ from the official schedule for {frames} frames, {size}/{overlap}")


def test_timesteps_match_the_official_run(run, official):
    ps, pipe, io = run
    assert pipe.net.config.latent_downscale == ps.latent_downscale
    assert [t for t, _ in official["steps"]] == io["sampling_timesteps"].tolist()
    derived = ps.config.get("derived", {}).get("sampling_timesteps")
    if derived:
        assert io["sampling_timesteps"].tolist() == derived


def test_audio_tokens(run, official):
    ps, _, io = run
    assert_parity("long_audio_tokens", official["audio_tokens"], io["long_audio_tokens"], ps.tolerance)


def test_first_unet_call(run, official):
    ps, _, io = run
    assert_parity("first_unet_call_out", official["first"], io["first_unet_call_out"], ps.tolerance)


def test_step_and_final_latents(run, official):
    ps, _, io = run
    ours = torch.stack([x for _, x in official["steps"]])
    assert_parity("step_latents", ours, io["step_latents"], ps.tolerance)
    assert_parity("final_latents", official["latents"], io["final_latents"], ps.tolerance)


def test_a_perturbed_reference_fails(run):
    """The check is sensitive: with reference latents changed by 1 %, the first denoiser call (first timestep,
    window 0, the same call in a 1-step run) is far outside the tolerance."""
    ps, pipe, io = run
    with torch.no_grad():
        first = sample(ps, pipe, io, io["ref_latents"] * 1.01, num_inference_steps=1)["first"]
    err = rel_err(first, io["first_unet_call_out"])
    assert err > 10 * ps.tolerance, f"perturbed reference still within tolerance ({err:.2e})"
    with pytest.raises(AssertionError, match="exceeds"):
        assert_parity("perturbed first_unet_call_out", first, io["first_unet_call_out"], ps.tolerance)
