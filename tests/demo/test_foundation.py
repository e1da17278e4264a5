"""The embedded foundation: a few steps of its pretraining experiment rebuild a loadable foundation, and the shipped
one loads strictly into the demo's model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests.training.cli_helpers import SMALL_DATA
from vexpress.audio.encoders import PhoneticEncoder
from vexpress.audio.phonetic import PhoneticNet, save_phonetic_encoder
from vexpress.errors import WeightsError
from vexpress.models.config import VExpressConfig
from vexpress.models.vexpress_net import VExpressNet
from vexpress.models.weights import (
    FOUNDATION_AUDIO_ENCODER,
    FOUNDATION_FILES,
    add_foundation_audio_encoder,
    foundation_networks_digest,
    foundation_vae_dir,
    init_from_foundation,
    load_foundation_vae,
    read_foundation_manifest,
    replace_foundation_networks,
    replace_foundation_vae_decoder,
    save_foundation,
    vae_encoder_tensors,
)
from vexpress.training.export import load_weights
from vexpress.training.vae import tiny_vae
from vexpress.utils.paths import REPO_ROOT

SHIPPED = REPO_ROOT / "experiments" / "foundation" / "weights"


def _demo_net(seed: int = 0) -> VExpressNet:
    torch.manual_seed(seed)
    return VExpressNet(VExpressConfig.tiny(audio_embedding_dim=80, latent_downscale=4))


def _two_d(net: VExpressNet) -> dict[str, torch.Tensor]:
    out = {f"ref.{k}": v for k, v in net.reference_net.state_dict().items()}
    out.update({f"guider.{k}": v for k, v in net.v_kps_guider.state_dict().items()})
    out.update({f"unet.{k}": v for k, v in net.denoising_unet.state_dict().items() if "motion_module" not in k})
    return out


def test_save_and_load_foundation_round_trip(tmp_path):
    src, dst = _demo_net(0), _demo_net(1)
    sizes = save_foundation(tmp_path / "f", src, tiny_vae(4, 0), {"command": "test"})
    assert set(sizes) == {f"{n}.safetensors" for n in FOUNDATION_FILES} | {"vae"}
    audio_before = {k: v.clone() for k, v in dst.audio_projection.state_dict().items()}
    motion_before = {k: v.clone() for k, v in dst.denoising_unet.state_dict().items() if "motion_module" in k}
    load_weights(dst, tmp_path / "f")  # the stage loader dispatches on foundation.json
    a, b = _two_d(src), _two_d(dst)
    for k in a:  # stored in float16: equal to float16 rounding
        torch.testing.assert_close(b[k], a[k].half().float(), rtol=0, atol=0)
    # what the foundation does not hold keeps the network's own initialisation (as the official stage 1)
    for k, v in dst.audio_projection.state_dict().items():
        assert torch.equal(v, audio_before[k])
    for k, v in dst.denoising_unet.state_dict().items():
        if "motion_module" in k:
            assert torch.equal(v, motion_before[k])
    vae = load_foundation_vae(tmp_path / "f")
    assert vae.dtype == torch.float32 and not any(p.requires_grad for p in vae.parameters())
    assert read_foundation_manifest(tmp_path / "f")["command"] == "test"


def test_foundation_load_is_strict(tmp_path):
    save_foundation(tmp_path / "f", _demo_net(0), tiny_vae(4, 0), {})
    other = VExpressNet(VExpressConfig.tiny(audio_embedding_dim=80, latent_downscale=8))  # another guider
    with pytest.raises(WeightsError):
        init_from_foundation(other, tmp_path / "f")
    (tmp_path / "f" / "v_kps_guider.safetensors").unlink()
    with pytest.raises(WeightsError, match="lacks"):
        init_from_foundation(_demo_net(), tmp_path / "f")
    with pytest.raises(WeightsError, match="not a foundation"):
        init_from_foundation(_demo_net(), tmp_path)


def test_adding_an_audio_encoder_keeps_the_rest_of_the_foundation(tmp_path):
    save_foundation(tmp_path / "f", _demo_net(0), tiny_vae(4, 0), {"command": "first", "loss_curve": [1, 2]})
    before = {p.relative_to(tmp_path / "f"): p.read_bytes() for p in (tmp_path / "f").rglob("*") if p.is_file()}
    torch.manual_seed(0)
    save_phonetic_encoder(tmp_path / "enc", PhoneticNet(hidden=8, dim=80, kernel=3, layers=1),
                          {"n_mels": 80, "rate_hz": 50.0}, {})
    add_foundation_audio_encoder(tmp_path / "f", tmp_path / "enc", {"steps": 1})
    after = {p.relative_to(tmp_path / "f"): p for p in (tmp_path / "f").rglob("*") if p.is_file()}
    for rel, data in before.items():
        if rel.name != "foundation.json":
            assert after[rel].read_bytes() == data, rel
    manifest = read_foundation_manifest(tmp_path / "f")
    assert manifest["command"] == "first" and manifest["loss_curve"] == [1, 2]  # the first run's record is kept
    assert manifest["audio_encoder"] == FOUNDATION_AUDIO_ENCODER and manifest["audio_encoder_fit"] == {"steps": 1}
    assert PhoneticEncoder(tmp_path / "f" / FOUNDATION_AUDIO_ENCODER).dim == 80
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_replacing_the_vae_decoder_keeps_the_rest_and_refuses_another_encoder(tmp_path):
    save_foundation(tmp_path / "f", _demo_net(0), tiny_vae(4, 0), {"command": "first"})
    before = {p.relative_to(tmp_path / "f"): p.read_bytes() for p in (tmp_path / "f").rglob("*") if p.is_file()}
    vae = load_foundation_vae(tmp_path / "f")
    with torch.no_grad():
        vae.decoder.conv_out.bias += 0.25  # a new decoder, the same encoder
    replace_foundation_vae_decoder(tmp_path / "f", vae, {"steps": 1})
    after = load_foundation_vae(tmp_path / "f")
    torch.testing.assert_close(after.decoder.conv_out.bias, vae.decoder.conv_out.bias.half().float(), rtol=0, atol=0)
    for k, v in vae_encoder_tensors(after).items():
        assert torch.equal(v, vae_encoder_tensors(vae)[k]), k
    for rel, data in before.items():
        if rel.parts[0] != "vae" and rel.name != "foundation.json":
            assert (tmp_path / "f" / rel).read_bytes() == data, rel
    manifest = read_foundation_manifest(tmp_path / "f")
    assert manifest["command"] == "first" and manifest["vae_decoder_fit"] == {"steps": 1}

    moved = load_foundation_vae(tmp_path / "f")
    with torch.no_grad():
        moved.encoder.conv_in.weight.mul_(1.5)  # the latents would change: the foundation's networks no longer fit
    snapshot = {p.relative_to(tmp_path / "f"): p.read_bytes() for p in (tmp_path / "f").rglob("*") if p.is_file()}
    with pytest.raises(WeightsError, match="encoder differs"):
        replace_foundation_vae_decoder(tmp_path / "f", moved, {"steps": 2})
    assert snapshot == {p.relative_to(tmp_path / "f"): p.read_bytes() for p in (tmp_path / "f").rglob("*")
                        if p.is_file()}  # nothing written
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_replacing_the_networks_keeps_the_vae_and_audio_encoder_and_changes_the_digest(tmp_path):
    from tests.helpers.tiny import random_demo_foundation

    random_demo_foundation(tmp_path / "f")
    kept = {p.relative_to(tmp_path / "f"): p.read_bytes() for p in (tmp_path / "f").rglob("*")
            if p.is_file() and p.parent.name in ("vae", FOUNDATION_AUDIO_ENCODER)}
    digest = foundation_networks_digest(tmp_path / "f")
    assert foundation_networks_digest(tmp_path / "f") == digest
    net = _demo_net(3)
    replace_foundation_networks(tmp_path / "f", net, {"command": "again", "stage_config": {"name": "x"}})
    for rel, data in kept.items():
        assert (tmp_path / "f" / rel).read_bytes() == data, rel
    manifest = read_foundation_manifest(tmp_path / "f")
    assert manifest["command"] == "again" and manifest["audio_encoder"] == FOUNDATION_AUDIO_ENCODER
    assert manifest["files"] == sorted(FOUNDATION_FILES)
    loaded = _demo_net(0)
    init_from_foundation(loaded, tmp_path / "f")
    a, b = _two_d(net), _two_d(loaded)
    for k in a:
        torch.testing.assert_close(b[k], a[k].half().float(), rtol=0, atol=0)
    assert foundation_networks_digest(tmp_path / "f") != digest
    with pytest.raises(ValueError, match="manifest's own keys"):
        replace_foundation_networks(tmp_path / "f", net, {"files": []})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_first_stage_key_follows_the_foundation_it_starts_from(tmp_path):
    """A rebuilt foundation at the same path is another starting point: its stages are not reused."""
    from omegaconf import OmegaConf

    from tests.helpers.tiny import random_demo_foundation
    from vexpress.training.runner import stage_key

    random_demo_foundation(tmp_path / "f")
    cfg = OmegaConf.create({"stage": {"name": "image", "init_from": str(tmp_path / "f")}, "seed": 0})
    first = stage_key(cfg)
    assert stage_key(cfg) == first
    replace_foundation_networks(tmp_path / "f", _demo_net(5), {})
    assert stage_key(cfg) != first
    # a chained stage counts its previous stage's key, not the folder; an export folder counts as before
    chained = OmegaConf.create({"stage": {"name": "joint", "init_from": str(tmp_path / "f")}, "seed": 0})
    assert stage_key(chained, previous="abc") == stage_key(
        OmegaConf.create({"stage": {"name": "joint", "init_from": "elsewhere"}, "seed": 0}), previous="abc")
    shutil.copytree(tmp_path / "f", tmp_path / "copy")  # the same foundation elsewhere: the same starting point
    moved = OmegaConf.create({"stage": {"name": "image", "init_from": str(tmp_path / "copy")}, "seed": 0})
    assert stage_key(moved) == stage_key(cfg)
    plain = OmegaConf.create({"stage": {"name": "image", "init_from": str(tmp_path)}, "seed": 0})
    assert stage_key(plain) != stage_key(cfg)

    # a chained stage that restores parameters from the foundation counts its networks the same way
    def restoring(folder):
        return OmegaConf.create({"stage": {"name": "audio_motion", "init_from": "prev", "restore": {
            "from": str(folder), "params": ["denoising_unet.*.attn2.to_out.*"]}}, "seed": 0})

    restored = stage_key(restoring(tmp_path / "f"), previous="abc")
    assert stage_key(restoring(tmp_path / "copy"), previous="abc") == restored
    assert restored != stage_key(chained, previous="abc")
    replace_foundation_networks(tmp_path / "copy", _demo_net(6), {})
    assert stage_key(restoring(tmp_path / "copy"), previous="abc") != restored


def test_stage_keys_follow_the_foundations_contents_not_its_folder(tmp_path):
    """Every stage of a demo run reads the foundation three ways (networks, VAE, speech encoder): a copy of the
    foundation in another folder keeps every key; a refitted speech encoder or VAE encoder changes them, a
    fine-tuned VAE decoder does not (the latents, so what the stages learn, stay)."""
    from omegaconf import OmegaConf

    from tests.helpers.tiny import random_demo_foundation
    from vexpress.training.runner import stage_key

    def demo_stage(f, name="image", previous=""):
        return OmegaConf.create({
            "stage": {"name": name, **({} if previous else {"init_from": str(f)})}, "seed": 0,
            "model": {"vae": {"_target_": "vexpress.models.weights.load_foundation_vae", "directory": str(f)}},
            "data": {"synthetic": {"seed": 0, "audio_encoder": {"name": "phonetic", "path": str(f / "audio_encoder")}},
                     "cache_dir": str(f.parent / "cache")}})

    random_demo_foundation(tmp_path / "f")
    shutil.copytree(tmp_path / "f", tmp_path / "elsewhere" / "f")
    keys = [stage_key(demo_stage(tmp_path / "f")), stage_key(demo_stage(tmp_path / "f", "joint", "abc"))]
    assert [stage_key(demo_stage(tmp_path / "elsewhere" / "f")),
            stage_key(demo_stage(tmp_path / "elsewhere" / "f", "joint", "abc"))] == keys

    vae = load_foundation_vae(tmp_path / "f")
    with torch.no_grad():
        vae.decoder.conv_out.weight.mul_(0.5)
    replace_foundation_vae_decoder(tmp_path / "f", vae, {"steps": 1})
    assert stage_key(demo_stage(tmp_path / "f")) == keys[0]
    with torch.no_grad():
        vae.encoder.conv_in.weight.mul_(1.5)  # other latents: written over the VAE folder by hand (no API does it)
    vae.half().save_pretrained(str(foundation_vae_dir(tmp_path / "f")), safe_serialization=True)
    assert stage_key(demo_stage(tmp_path / "f")) != keys[0]

    torch.manual_seed(1)
    refit = save_phonetic_encoder(tmp_path / "enc", PhoneticNet(hidden=16, dim=80, kernel=3, layers=1),
                                  {"n_mels": 80, "rate_hz": 50.0}, {})
    add_foundation_audio_encoder(tmp_path / "elsewhere" / "f", refit, {"steps": 1})
    assert stage_key(demo_stage(tmp_path / "elsewhere" / "f", "joint", "abc")) != keys[1]


@pytest.mark.skipif(not (SHIPPED / "foundation.json").is_file(), reason="no shipped foundation in this checkout")
def test_shipped_foundation_loads_strictly_into_the_demo_model():
    manifest = read_foundation_manifest(SHIPPED)
    for key in ("command", "commit", "seconds", "loss_curve", "data"):
        assert key in manifest, key
    assert manifest["seconds"]["total"] > 0 and len(manifest["loss_curve"]) > 10
    total = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert total <= 12 * 1024 * 1024
    net = _demo_net()
    report = init_from_foundation(net, SHIPPED)
    assert {"reference_net", "v_kps_guider"} <= set(report.sources)
    vae = load_foundation_vae(SHIPPED)
    assert vae.config.latent_channels == net.config.unet["in_channels"] == 4
    assert 2 ** (len(vae.config.block_out_channels) - 1) == net.config.latent_downscale
    encoder = PhoneticEncoder(SHIPPED / manifest["audio_encoder"])  # the speech encoder the demo hears through
    assert encoder.dim == net.config.audio_embedding_dim
    assert manifest["audio_encoder_fit"]["heldout"]["phone_acc"] > 0.95
    assert manifest["stages"][0]["stage"] == "image_captioned" and manifest["caption_encoder"]["dim"] == 64


@pytest.mark.slow
def test_pretraining_experiment_rebuilds_a_few_steps(tmp_path):
    """The shipped experiment, shrunk to a few steps: data, VAE, latents, image stage, and a foundation that loads."""
    overrides = [*SMALL_DATA, "data.synthetic.num_identities=6", "data.synthetic.heldout_identities=2",
                 "stage.max_steps=3", "stage.batch_size=2", "trainer.log_every_n_steps=1"]
    train = ",".join(f'"{o}"' for o in overrides)
    cmd = [sys.executable, "-m", "vexpress.cli.foundation", f"output_dir={tmp_path / 'weights'}",
           f"work_dir={tmp_path / 'work'}", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.root_dir={REPO_ROOT}",
           f"train_overrides=[{train}]", "vae.steps=3", "vae_decoder.steps=3", "audio_encoder.steps=3", "threads=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = json.loads((tmp_path / "weights" / "foundation.json").read_text())
    assert manifest["stages"][0] == {"stage": "image_captioned", "global_step": 3, "skipped": False}
    assert manifest["caption_encoder"]["attributes"] == 3  # the cross-attention learned captions
    assert [r["step"] for r in manifest["loss_curve"]] and manifest["commit"]
    assert manifest["data"]["synthetic"]["seed"] == 1000  # the pretraining split, not the demo's identities
    net = _demo_net()
    init_from_foundation(net, tmp_path / "weights")
    assert manifest["audio_encoder_fit"]["steps"] == 3
    assert PhoneticEncoder(tmp_path / "weights" / manifest["audio_encoder"]).dim == 80
    fit = manifest["vae_decoder_fit"]
    assert fit["steps"] == 3 and fit["heldout_frames"] > 0 and fit["heldout_after"]["psnr"] > 0

    # only=vae_decoder: the decoder alone, again, in place; the encoder and every other file stay
    encoder = vae_encoder_tensors(load_foundation_vae(tmp_path / "weights"))
    kept = {p: p.read_bytes() for p in (tmp_path / "weights").glob("*.safetensors")}
    proc = subprocess.run([*cmd, "only=vae_decoder", "vae_decoder.steps=2"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = json.loads((tmp_path / "weights" / "foundation.json").read_text())
    assert manifest["vae_decoder_fit"]["steps"] == 2 and manifest["stages"][0]["global_step"] == 3
    for k, v in vae_encoder_tensors(load_foundation_vae(tmp_path / "weights")).items():
        assert torch.equal(v, encoder[k]), k
    assert kept == {p: p.read_bytes() for p in (tmp_path / "weights").glob("*.safetensors")}

    # only=networks: the networks again (with captions, as shipped), in place; the VAE and the audio encoder stay
    kept = {p: p.read_bytes() for p in (tmp_path / "weights").rglob("*") if p.is_file()
            and p.parent.name in ("vae", FOUNDATION_AUDIO_ENCODER)}
    digest = foundation_networks_digest(tmp_path / "weights")
    captioned = ",".join(f'"{o}"' for o in [*overrides, "stage.max_steps=2"])
    proc = subprocess.run([*cmd[:-5], f"train_overrides=[{captioned}]", "threads=1", "only=networks"], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = json.loads((tmp_path / "weights" / "foundation.json").read_text())
    assert manifest["stages"][0] == {"stage": "image_captioned", "global_step": 2, "skipped": False}
    assert manifest["caption_encoder"]["attributes"] == 3 and manifest["vae_decoder_fit"]["steps"] == 2
    assert foundation_networks_digest(tmp_path / "weights") != digest
    assert kept == {p: p.read_bytes() for p in (tmp_path / "weights").rglob("*") if p.is_file()
                    and p.parent.name in ("vae", FOUNDATION_AUDIO_ENCODER)}
    init_from_foundation(_demo_net(), tmp_path / "weights")
