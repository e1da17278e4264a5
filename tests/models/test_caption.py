"""The frozen caption encoder (the foundation's stand-in for SD1.5's text encoder) and a captioned training step."""

from __future__ import annotations

import pytest
import torch

from tests.training import random_batches as fakes
from tests.training.helpers import lit_module, tiny_network
from vexpress.errors import InputError, ShapeError
from vexpress.models.caption import CaptionEncoder
from vexpress.training.rng import generator_for
from vexpress.training.stages import StageSpec, apply_stage
from vexpress.utils.paths import CONF_DIR


def test_caption_encoder_is_a_fixed_function_of_its_settings():
    a, b = CaptionEncoder(3, 64, seed=0), CaptionEncoder(3, 64, seed=0)
    x = torch.rand(2, 4, 3)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)  # rebuilt, not saved
    assert a(x).shape == (2, 4, 3, 64)
    assert not list(a.parameters()) and not a.state_dict()  # nothing trains, nothing lands in a checkpoint
    assert not torch.equal(CaptionEncoder(3, 64, seed=1)(x), a(x))
    # each attribute is its own word: the same value in two slots gives two different tokens
    same = torch.full((1, 1, 3), 0.5)
    tokens = a(same)[0, 0]
    assert (tokens[0] - tokens[1]).norm() > 1 and (tokens[1] - tokens[2]).norm() > 1
    # the tokens follow the value: a wider mouth moves the width token, not the others
    wider = same.clone()
    wider[..., 1] = 0.9
    moved = (a(wider)[0, 0] - tokens).norm(dim=-1)
    assert moved[1] > 0.5 and moved[0] == 0 and moved[2] == 0
    with pytest.raises(ShapeError, match="attributes"):
        a(torch.rand(2, 4, 5))


def _captioned_stage() -> StageSpec:
    from omegaconf import OmegaConf

    conf = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "stage" / "image_captioned.yaml"))
    conf.pop("_target_")
    return StageSpec(**conf)


def test_a_captioned_step_trains_the_cross_attention_on_the_captions():
    net = tiny_network(0)
    encoder = CaptionEncoder(3, int(net.config.unet["cross_attention_dim"]), seed=0)
    m = lit_module(caption_encoder=encoder)
    apply_stage(m.net, _captioned_stage())
    attn2 = {n: p for n, p in m.net.named_parameters()
             if n.startswith("denoising_unet.") and ".attn2." in n and "attentions" in n}
    # attn2 trains, but its output bias stays at zero: a dropped caption (zero tokens) leaves it exactly silent
    bias = {n: p for n, p in attn2.items() if n.endswith("to_out.0.bias")}
    assert bias and all(not p.requires_grad and not p.any() for p in bias.values())
    attn2 = {n: p for n, p in attn2.items() if n not in bias}
    assert attn2 and all(p.requires_grad for p in attn2.values())
    b = fakes.batch(num_frames=1)
    b["caption"] = torch.rand(2, 1, 3, generator=torch.Generator().manual_seed(0))
    out = m.diffusion_step(b, generator_for(0, "train", 0, 0))
    out.loss.backward()
    grads = {n: p.grad for n, p in attn2.items() if "to_out" in n and p.grad is not None}
    assert grads and any(g.abs().sum() > 0 for g in grads.values())  # the captions reach the loss
    # once attn2 speaks (to_out no longer zero), the prediction depends on the caption
    with torch.no_grad():
        for n, p in attn2.items():
            if "to_out" in n and n.endswith("weight"):
                p.normal_(0, 0.5)
    other = {**b, "caption": 1.0 - b["caption"]}
    g = generator_for(0, "train", 0, 1)
    assert not torch.equal(m.diffusion_step(b, g).loss, m.diffusion_step(other, generator_for(0, "train", 0, 1)).loss)
    # zero tokens (a dropped caption) through the trained attn2 = attn2 silenced: nothing leaks from it
    g = torch.Generator().manual_seed(1)
    noisy, ref, t = torch.randn(2, 4, 1, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g), torch.tensor([9, 9])
    with torch.no_grad():
        dropped = m.net(noisy, t, ref_latents=ref, audio_tokens=torch.zeros(2, 1, 3, 64))
        for n, p in attn2.items():
            if "to_out" in n:
                p.zero_()
        torch.testing.assert_close(m.net(noisy, t, ref_latents=ref, audio_tokens=torch.zeros(2, 1, 3, 64)), dropped,
                                   rtol=0, atol=0)
    with pytest.raises(InputError, match="no captions"):
        m.prepare({k: v for k, v in b.items() if k != "caption"}, None)
    with pytest.raises(InputError, match="cross-attention"):
        lit_module(caption_encoder=CaptionEncoder(3, 7))
