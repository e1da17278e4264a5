"""The sampling loop against the official ``VExpressPipeline.__call__`` run stored in shared/parity/dev.

Setting (parity README "Sampling run"): 20 frames, 4 DDIM steps (999, 749, 499, 249), context windows 8 / overlap 2
(official ``uniform`` schedule: [0..7], [6..13], [12..19]), guidance 3.5, reference / audio attention weights
0.95 / 3.0, initial noise ``init_noise``, keypoints ``long_kps_coords`` drawn at 128x128, audio features
``long_wav2vec_like``. Tolerance: max|ours - ref| <= 1e-4 * max|ref|.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.parity import TOLERANCE, assert_parity, load_dev_net, load_vectors, rel_err
from vexpress.pipelines.context import context_windows
from vexpress.pipelines.guidance import Guidance
from vexpress.pipelines.schedulers import make_scheduler
from vexpress.pipelines.vexpress_pipeline import VExpressPipeline

pytestmark = pytest.mark.filterwarnings("ignore")

SETTINGS = dict(num_inference_steps=4, context_frames=8, context_overlap=2, reference_attention_weight=0.95,
                audio_attention_weight=3.0)


@pytest.fixture(scope="module")
def run(request):
    from vexpress.utils.paths import parity_dir

    path = parity_dir()
    if not (path / "config.json").is_file():
        pytest.skip(reason=f"parity vectors not present at {path} (set VEXPRESS_PARITY_DIR)")
    if torch.cuda.is_available():  # the vectors are float32 CPU; TF32 alone costs ~1e-3
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    net = load_dev_net(path)
    io = load_vectors(path)
    pipe = VExpressPipeline(net, device="cpu", dtype=torch.float32)
    return pipe, io


def sample(pipe, io, ref_latents):
    num_frames = io["init_noise"].shape[2]
    h, w = (s * pipe.net.config.latent_downscale for s in io["init_noise"].shape[-2:])
    bank = pipe.net.encode_reference(ref_latents)
    audio = pipe.encode_audio(io["long_wav2vec_like"], num_frames, features=True)
    kps = pipe.encode_kps(io["long_kps_coords"], h, w)
    steps, first = [], {}

    def on_output(step, window, out):
        if step == 0 and window == 0:
            first["out"] = out.clone()

    latents = pipe.denoise(
        io["init_noise"].clone(), bank, audio, kps, guidance=Guidance(3.5), scheduler=make_scheduler("ddim"),
        callback_on_step_end=lambda i, t, x: steps.append((int(t), x.clone())), on_model_output=on_output,
        progress=False, **SETTINGS,
    )
    return {"latents": latents, "steps": steps, "first": first["out"], "audio_tokens": audio.tokens}


@pytest.fixture(scope="module")
def official(run):
    pipe, io = run
    with torch.no_grad():
        return sample(pipe, io, io["ref_latents"])


def test_windows_and_timesteps_match_the_official_run(run, official):
    _, io = run
    assert [list(w) for w in context_windows(20, 8, 2)] == [list(range(0, 8)), list(range(6, 14)),
                                                            list(range(12, 20))]
    assert [t for t, _ in official["steps"]] == io["sampling_timesteps"].tolist()


def test_audio_tokens(run, official):
    _, io = run
    assert_parity("long_audio_tokens", official["audio_tokens"], io["long_audio_tokens"])


def test_first_unet_call(run, official):
    _, io = run
    assert_parity("first_unet_call_out", official["first"], io["first_unet_call_out"])


def test_step_and_final_latents(run, official):
    _, io = run
    ours = torch.stack([x for _, x in official["steps"]])
    assert_parity("step_latents", ours, io["step_latents"])
    assert_parity("final_latents", official["latents"], io["final_latents"])


def test_a_perturbed_reference_fails(run):
    """The check is sensitive: with reference latents changed by 1 %, the first denoiser call (t=999, window 0,
    the same call in a 1-step run) is far outside the tolerance."""
    pipe, io = run
    num_frames = io["init_noise"].shape[2]
    h, w = (s * pipe.net.config.latent_downscale for s in io["init_noise"].shape[-2:])
    first = {}
    with torch.no_grad():
        bank = pipe.net.encode_reference(io["ref_latents"] * 1.01)
        pipe.denoise(io["init_noise"].clone(), bank, pipe.encode_audio(io["long_wav2vec_like"], num_frames,
                                                                        features=True),
                     pipe.encode_kps(io["long_kps_coords"], h, w), guidance=Guidance(3.5),
                     scheduler=make_scheduler("ddim"), progress=False,
                     on_model_output=lambda i, j, out: first.setdefault((i, j), out.clone()),
                     **{**SETTINGS, "num_inference_steps": 1})
    err = rel_err(first[(0, 0)], io["first_unet_call_out"])
    assert err > 10 * TOLERANCE, f"perturbed reference still within tolerance ({err:.2e})"
    with pytest.raises(AssertionError, match="exceeds"):
        assert_parity("perturbed first_unet_call_out", first[(0, 0)], io["first_unet_call_out"])
