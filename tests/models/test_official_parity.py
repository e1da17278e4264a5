"""The network against tensors produced by the official V-Express code (shared/parity/dev).

Tolerance: max|ours - ref| <= 1e-4 * max|ref| (float32, CPU); the V-Kps images must match exactly.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.parity import TOLERANCE, assert_parity, load_dev_net, load_vectors, rel_err
from vexpress.audio.windows import audio_windows
from vexpress.kps.draw import draw_kps_sequence
from vexpress.models import DropMask

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def dev(request):
    from vexpress.utils.paths import parity_dir

    path = parity_dir()
    if not (path / "config.json").is_file():
        pytest.skip(reason=f"parity vectors not present at {path} (set VEXPRESS_PARITY_DIR)")
    torch.manual_seed(0)
    return load_dev_net(path), load_vectors(path)


def _unet(net, io, **kwargs):
    bank = net.encode_reference(io["ref_latents"])
    return net.denoising_unet(
        io["noisy_latents"], io["timestep"], audio_tokens=io["audio_tokens"][None],
        kps_features=io["kps_features"], reference=bank, **kwargs,
    )


def test_kps_images_are_pixel_exact(dev):
    _, io = dev
    ours = draw_kps_sequence(128, 128, io["kps_coords"])[None]
    assert torch.equal(ours, io["kps_images"]), "V-Kps drawing differs from the official one"


def test_audio_windows(dev):
    _, io = dev
    assert_parity("audio_windows", audio_windows(io["wav2vec_like"], 8, num_pad=2), io["audio_windows"], tol=0.0)


@torch.no_grad()
def test_condition_encoders(dev):
    net, io = dev
    assert_parity("kps_features", net.encode_kps(io["kps_images"]), io["kps_features"])
    assert_parity("audio_tokens", net.encode_audio(io["audio_windows"][None])[0], io["audio_tokens"])


@torch.no_grad()
def test_reference_bank(dev):
    net, io = dev
    bank = net.encode_reference(io["ref_latents"])
    names = sorted(k[len("ref_bank."):] for k in io if k.startswith("ref_bank."))
    assert sorted(bank.features) == names
    for name in names:
        assert_parity(f"ref_bank.{name}", bank.features[name], io[f"ref_bank.{name}"])


@torch.no_grad()
@pytest.mark.parametrize(
    "output,kwargs",
    [
        ("unet_out_cond", {}),
        ("unet_out_weighted", {"reference_attention_weight": 0.95, "audio_attention_weight": 3.0}),
        ("unet_out_uncond", {"drop": DropMask.all(1)}),
    ],
)
def test_denoiser(dev, output, kwargs):
    net, io = dev
    assert_parity(output, _unet(net, io, **kwargs), io[output])


@torch.no_grad()
def test_full_forward_from_raw_conditions(dev):
    """The training entry point (raw reference latents, audio windows, kps images) gives the same output."""
    net, io = dev
    out = net(io["noisy_latents"], io["timestep"], ref_latents=io["ref_latents"],
              audio_windows=io["audio_windows"][None], kps_images=io["kps_images"])
    assert_parity("unet_out_cond (forward)", out, io["unet_out_cond"])


@torch.no_grad()
def test_parity_check_detects_a_perturbed_output(dev):
    """The comparison is not vacuous: a stored output perturbed by 1e-3 of its range fails it."""
    net, io = dev
    ours = _unet(net, io)
    perturbed = io["unet_out_cond"].clone()
    perturbed.view(-1)[123] += 1e-3 * perturbed.abs().max()
    assert rel_err(ours, perturbed) > TOLERANCE
    with pytest.raises(AssertionError, match="exceeds"):
        assert_parity("perturbed", ours, perturbed)
    # and a wrong attention weight is caught too
    with pytest.raises(AssertionError):
        assert_parity("weighted-vs-cond", _unet(net, io, audio_attention_weight=3.0), io["unet_out_cond"])
