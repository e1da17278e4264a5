"""The network against tensors produced by the official V-Express code, on every parity vector set.

Sets: the shared ``dev`` set, ``tests/parity_sets/*`` and ``$VEXPRESS_PARITY_SETS`` (see ``tests/helpers/parity.py``).
Every setting (image and latent size, frame count, timestep, attention weights, audio padding) comes from the set's
``config.json``. Tolerance: max|ours - ref| <= 1e-4 * max|ref| (float32, CPU); the V-Kps images must match exactly.
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.parity import ParitySet, assert_parity, parity_set_params, rel_err
from vexpress.audio.windows import audio_windows
from vexpress.kps.draw import draw_kps_sequence
from vexpress.models import DropMask

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module", params=parity_set_params())
def vset(request):
    """The set's settings and tensors (no weights needed)."""
    ps = ParitySet.open(request.param)
    return ps, ps.vectors


@pytest.fixture(scope="module")
def pset(vset):
    """The set with its network (skips with the reason when the set's weights are absent)."""
    ps, io = vset
    torch.manual_seed(0)
    net = ps.load_net(num_padding_audio_frames=ps.single_forward["num_pad_audio_frames"])
    return ps, net, io


def _unet(net, io, **kwargs):
    bank = net.encode_reference(io["ref_latents"])
    return net.denoising_unet(
        io["noisy_latents"], io["timestep"], audio_tokens=io["audio_tokens"][None],
        kps_features=io["kps_features"], reference=bank, **kwargs,
    )


def _weights(ps):
    sf = ps.single_forward
    return {"reference_attention_weight": float(sf["reference_attention_weight"]),
            "audio_attention_weight": float(sf["audio_attention_weight"])}


def test_stored_tensors_have_the_configured_shapes(vset):
    """The settings read from config.json describe the stored tensors (so the other tests really use them)."""
    ps, io = vset
    (height, width), (h, w), frames = ps.image_size, ps.latent_size, int(ps.sizes["frames"])
    assert tuple(io["noisy_latents"].shape) == (1, 4, frames, h, w)
    assert tuple(io["ref_latents"].shape) == (1, 4, h, w)
    assert tuple(io["kps_images"].shape) == (1, 3, frames, height, width)
    assert tuple(io["kps_coords"].shape) == (frames, 3, 2)
    assert tuple(io["wav2vec_like"].shape)[0] == int(ps.sizes["wav2vec_tokens"])
    assert io["timestep"].tolist() == [int(ps.single_forward["timestep"])]


def test_kps_images_are_pixel_exact(vset):
    ps, io = vset
    height, width = ps.image_size
    ours = draw_kps_sequence(height, width, io["kps_coords"])[None]
    assert torch.equal(ours, io["kps_images"]), "V-Kps drawing differs from the official one"


def test_audio_windows(vset):
    ps, io = vset
    num_pad = int(ps.single_forward["num_pad_audio_frames"])
    ours = audio_windows(io["wav2vec_like"], int(ps.sizes["frames"]), num_pad=num_pad)
    assert_parity("audio_windows", ours, io["audio_windows"], tol=0.0)


@torch.no_grad()
def test_condition_encoders(pset):
    ps, net, io = pset
    assert_parity("kps_features", net.encode_kps(io["kps_images"]), io["kps_features"], ps.tolerance)
    assert_parity("audio_tokens", net.encode_audio(io["audio_windows"][None])[0], io["audio_tokens"], ps.tolerance)


@torch.no_grad()
def test_reference_bank(pset):
    ps, net, io = pset
    bank = net.encode_reference(io["ref_latents"])
    names = sorted(ps.ref_bank_blocks)
    assert sorted(bank.features) == names
    for name in names:
        assert_parity(f"ref_bank.{name}", bank.features[name], io[f"ref_bank.{name}"], ps.tolerance)


@torch.no_grad()
@pytest.mark.parametrize("output", ["unet_out_cond", "unet_out_weighted", "unet_out_uncond"])
def test_denoiser(pset, output):
    ps, net, io = pset
    kwargs = {"unet_out_cond": {}, "unet_out_weighted": _weights(ps),
              "unet_out_uncond": {"drop": DropMask.all(1)}}[output]
    assert_parity(output, _unet(net, io, **kwargs), io[output], ps.tolerance)


@torch.no_grad()
def test_full_forward_from_raw_conditions(pset):
    """The training entry point (raw reference latents, audio windows, kps images) gives the same output."""
    ps, net, io = pset
    out = net(io["noisy_latents"], io["timestep"], ref_latents=io["ref_latents"],
              audio_windows=io["audio_windows"][None], kps_images=io["kps_images"])
    assert_parity("unet_out_cond (forward)", out, io["unet_out_cond"], ps.tolerance)


@torch.no_grad()
def test_parity_check_detects_a_perturbed_output(pset):
    """The comparison is not vacuous: a stored output perturbed by 1e-3 of its range fails it."""
    ps, net, io = pset
    ours = _unet(net, io)
    perturbed = io["unet_out_cond"].clone()
    perturbed.view(-1)[perturbed.numel() // 2] += 1e-3 * perturbed.abs().max()
    assert rel_err(ours, perturbed) > ps.tolerance
    with pytest.raises(AssertionError, match="exceeds"):
        assert_parity("perturbed", ours, perturbed, ps.tolerance)
    # and a wrong attention weight is caught too (unet_out_cond has weights 1 / 1)
    with pytest.raises(AssertionError):
        assert_parity("weighted-vs-cond", _unet(net, io, audio_attention_weight=3.0), io["unet_out_cond"],
                      ps.tolerance)
