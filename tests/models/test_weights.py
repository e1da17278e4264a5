"""Official checkpoint I/O, the export folder, and initialisation from SD1.5 / AnimateDiff / Moore files."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.tiny import tiny_inputs, tiny_net, tiny_vae
from vexpress.errors import WeightsError
from vexpress.models.weights import (
    find_official_files,
    init_from_moore,
    init_from_sd15,
    init_motion_modules,
    load_export,
    load_official,
    official_state_dicts,
    save_export,
    save_official,
)
from vexpress.utils.io import load_tensors, save_tensors


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "pth"])
def test_save_load_round_trip(tmp_path, fmt):
    src, dst = tiny_net(seed=1), tiny_net(seed=2)
    assert not _same_weights(src, dst)
    paths = save_official(src, tmp_path, fmt)
    assert sorted(paths) == sorted(["denoising_unet", "motion_module", "reference_net", "v_kps_guider",
                                    "audio_projection"])
    report = load_official(dst, tmp_path)
    assert _same_weights(src, dst)
    assert "motion modules taken from" in str(report)
    x = tiny_inputs()
    with torch.no_grad():
        assert torch.equal(src(x["noisy_latents"], x["timesteps"], ref_latents=x["ref_latents"]),
                           dst(x["noisy_latents"], x["timesteps"], ref_latents=x["ref_latents"]))


def test_missing_key_raises_and_names_it(tmp_path):
    net = tiny_net()
    save_official(net, tmp_path)
    sd = load_tensors(tmp_path / "v_kps_guider.safetensors")
    del sd["conv_out.bias"]
    save_tensors(tmp_path / "v_kps_guider.safetensors", sd)
    with pytest.raises(WeightsError, match=r"missing keys: conv_out\.bias"):
        load_official(tiny_net(seed=3), tmp_path)


def test_unexpected_key_and_shape_mismatch_raise(tmp_path):
    net = tiny_net()
    save_official(net, tmp_path)
    sd = load_tensors(tmp_path / "audio_projection.safetensors")
    sd["extra.weight"] = torch.zeros(1)
    save_tensors(tmp_path / "audio_projection.safetensors", sd)
    with pytest.raises(WeightsError, match=r"unexpected keys: extra\.weight"):
        load_official(tiny_net(), tmp_path)
    sd.pop("extra.weight")
    sd["latents"] = torch.zeros(1, 7, sd["latents"].shape[-1])
    save_tensors(tmp_path / "audio_projection.safetensors", sd)
    with pytest.raises(WeightsError, match="shape mismatches"):
        load_official(tiny_net(), tmp_path)


def test_denoiser_without_motion_file_must_be_complete(tmp_path):
    net = tiny_net()
    save_official(net, tmp_path)
    (tmp_path / "motion_module.safetensors").unlink()
    load_official(tiny_net(seed=5), tmp_path)  # full denoising_unet file: fine
    sd = load_tensors(tmp_path / "denoising_unet.safetensors")
    save_tensors(tmp_path / "denoising_unet.safetensors", {k: v for k, v in sd.items() if "motion_module" not in k})
    with pytest.raises(WeightsError, match="missing keys: .*motion_modules"):
        load_official(tiny_net(seed=5), tmp_path)


def test_missing_file_is_a_clear_error(tmp_path):
    save_official(tiny_net(), tmp_path, modules=["denoising_unet", "reference_net"])
    with pytest.raises(WeightsError, match="missing weight files for v_kps_guider, audio_projection"):
        load_official(tiny_net(), tmp_path)
    with pytest.raises(WeightsError, match="weights folder not found"):
        find_official_files(tmp_path / "nope")


def test_pickled_objects_are_refused(tmp_path):
    """A .pth holding arbitrary Python objects is not unpickled."""

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"conv_in.weight": Evil()}, tmp_path / "v_kps_guider.pth")
    with pytest.raises(WeightsError, match="cannot read v_kps_guider"):
        load_tensors(tmp_path / "v_kps_guider.pth", "v_kps_guider")


def test_export_round_trip_with_vae(tmp_path):
    net, vae = tiny_net(seed=4), tiny_vae()
    out = save_export(tmp_path / "export", net, vae=vae, audio_encoder={"name": "logmel", "n_mels": 16},
                      extra={"stage": "joint"})
    assert out.is_dir() and not list(tmp_path.glob(".*tmp-part"))
    loaded = load_export(out)
    assert _same_weights(net, loaded.net)
    assert loaded.audio_encoder == {"name": "logmel", "n_mels": 16} and loaded.extra == {"stage": "joint"}
    assert _same_weights(vae, loaded.vae)
    # overwriting an existing export is atomic and complete
    save_export(tmp_path / "export", tiny_net(seed=9))
    again = load_export(tmp_path / "export")
    assert again.vae is None and not _same_weights(net, again.net)


def test_not_an_export_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="is not a vexpress export"):
        load_export(tmp_path)


def _sd15_style_unet_dir(net, tmp_path):
    """A diffusers-layout UNet folder built from a tiny 2D UNet with the same config (stand-in for SD1.5)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(11)
    unet = UNet2DConditionModel(**net.config.unet)
    folder = tmp_path / "unet"
    unet.save_pretrained(folder, safe_serialization=True)
    return unet, folder


def test_init_from_sd15_unet_folder(tmp_path):
    net = tiny_net()
    unet, folder = _sd15_style_unet_dir(net, tmp_path)
    report = init_from_sd15(net, folder)
    sd2d = unet.state_dict()
    ref = net.reference_net.official_state_dict()
    assert all(torch.equal(ref[k], sd2d[k]) for k in ref) and "conv_norm_out.weight" not in ref
    den = net.denoising_unet.state_dict()
    base = [k for k in sd2d]
    assert all(torch.equal(den[k], sd2d[k]) for k in base)
    k = "down_blocks.0.attentions.0.transformer_blocks.0.attn1_5.to_q.weight"
    assert torch.equal(den[k], sd2d[k.replace("attn1_5", "attn1")])
    assert "copies of self-attention" in str(report)


def test_init_motion_modules_from_animatediff_layout(tmp_path):
    src, dst = tiny_net(seed=1), tiny_net(seed=2)
    motion = official_state_dicts(src)["motion_module"]
    torch.save(motion, tmp_path / "mm_sd_v15_v2.ckpt")
    init_motion_modules(dst, tmp_path / "mm_sd_v15_v2.ckpt")
    d = dst.denoising_unet.state_dict()
    assert all(torch.equal(d[k], v) for k, v in motion.items())
    bad = dict(motion)
    bad.pop(next(iter(bad)))
    torch.save(bad, tmp_path / "bad.ckpt")
    with pytest.raises(WeightsError, match="missing keys"):
        init_motion_modules(dst, tmp_path / "bad.ckpt")


def test_init_from_moore(tmp_path):
    src, dst = tiny_net(seed=1), tiny_net(seed=2)
    dicts = official_state_dicts(src)
    ref = dict(dicts["reference_net"])
    ref["conv_norm_out.weight"] = torch.ones(ref["conv_in.weight"].shape[0])  # Moore's reference UNet has it
    ref["conv_norm_out.bias"] = torch.zeros(ref["conv_in.weight"].shape[0])
    den = {k: v for k, v in dicts["denoising_unet"].items() if "attn1_5" not in k and "norm1_5" not in k
           and "motion_module" not in k}
    torch.save(ref, tmp_path / "reference_unet.pth")
    torch.save(den, tmp_path / "denoising_unet.pth")
    torch.save(dicts["v_kps_guider"], tmp_path / "pose_guider.pth")
    init_from_moore(dst, tmp_path / "reference_unet.pth", tmp_path / "denoising_unet.pth", tmp_path / "pose_guider.pth")
    out = dst.denoising_unet.state_dict()
    k = "up_blocks.1.attentions.1.transformer_blocks.0.norm1_5.weight"
    assert torch.equal(out[k], den[k.replace("norm1_5", "norm1")])
    assert torch.equal(dst.v_kps_guider.conv_out.weight, src.v_kps_guider.conv_out.weight)
