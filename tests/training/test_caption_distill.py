"""Caption distillation (vexpress.training.caption_distill): the audio attention is taught to make of the audio what
it makes of the frame's caption. Real tiny networks; the term is checked against its definition."""

from __future__ import annotations

import pytest
import torch

from tests.training import random_batches as fakes
from tests.training.helpers import lit_module, tiny_network
from vexpress.callbacks.stage_scheduler import StageScheduler
from vexpress.errors import InputError
from vexpress.models.caption import CaptionEncoder
from vexpress.models.conditioning import DropMask
from vexpress.training.caption_distill import CaptionDistillation
from vexpress.training.rng import generator_for
from vexpress.training.stages import StageSpec


def _speaking(net):
    """Give the audio attention a voice (its output starts at zero, as in training)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in net.named_parameters():
            if ".attn2.to_out" in n and n.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _batch(frames=2):
    b = fakes.batch(num_frames=frames)
    b["caption"] = torch.rand(2, frames, 3, generator=torch.Generator().manual_seed(0))
    return b


def test_the_term_is_zero_when_the_audio_says_the_caption_and_skips_dropped_audio():
    net = tiny_network(0)
    _speaking(net)
    enc = CaptionEncoder(3, int(net.config.unet["cross_attention_dim"]), seed=0)
    caption = torch.rand(2, 2, 3, generator=torch.Generator().manual_seed(1))
    tokens = enc(caption)
    g = torch.Generator().manual_seed(2)
    noisy, ref = torch.randn(2, 4, 2, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([5, 900])
    with CaptionDistillation(net, tokens) as same:
        net(noisy, t, ref_latents=ref, audio_tokens=tokens)
    assert len(same.terms) == len(same.modules) > 0 and same.loss().item() == 0.0
    other = enc(1.0 - caption)
    with CaptionDistillation(net, tokens) as differ:
        net(noisy, t, ref_latents=ref, audio_tokens=other)
    assert differ.loss().item() > 0
    # only the first sample speaks: the term is the first sample's alone
    with CaptionDistillation(net, tokens) as half:
        second_dropped = DropMask(torch.zeros(2), torch.zeros(2), torch.tensor([0.0, 1.0]))
        net(noisy, t, ref_latents=ref, audio_tokens=other, drop=second_dropped)
    with CaptionDistillation(net, tokens[:1]) as first:
        net(noisy[:1], t[:1], ref_latents=ref[:1], audio_tokens=other[:1])
    torch.testing.assert_close(half.loss(), first.loss())
    with CaptionDistillation(net, tokens) as none:
        net(noisy, t, ref_latents=ref, audio_tokens=other, drop=DropMask(torch.zeros(2), torch.zeros(2), torch.ones(2)))
    assert none.loss().item() == 0.0
    # the hooks are gone afterwards
    assert not any(m._forward_hooks for m in none.modules)


def test_a_distilled_step_adds_the_weighted_term_and_leaves_the_query_side_alone():
    width = int(tiny_network(0).config.unet["cross_attention_dim"])

    def step(weight):
        m = lit_module(0, caption_teacher=CaptionEncoder(3, width, seed=0), caption_distill_weight=weight)
        _speaking(m.net)
        out = m.diffusion_step(_batch(), generator_for(0, "train", 0, 0))
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in m.net.named_parameters() if p.grad is not None}

    plain, g0 = step(0.0)
    distilled, g1 = step(2.0)
    assert plain.caption_distill is None and distilled.caption_distill is not None
    torch.testing.assert_close(distilled.loss, plain.loss + 2.0 * distilled.caption_distill)
    assert float(distilled.caption_distill) > 0
    # the audio projection and the attention's keys/values hear the term; the denoiser's input side does not
    proj = [n for n in g0 if n.startswith("audio_projection")]
    assert proj and any(not torch.allclose(g0[n], g1[n]) for n in proj)
    kv = [n for n in g0 if ".attn2.to_k" in n]
    assert kv and any(not torch.allclose(g0[n], g1[n]) for n in kv)
    torch.testing.assert_close(g0["denoising_unet.conv_in.weight"], g1["denoising_unet.conv_in.weight"], rtol=0, atol=0)


def test_caption_distillation_refuses_what_it_cannot_do():
    width = int(tiny_network(0).config.unet["cross_attention_dim"])
    m = lit_module(caption_teacher=CaptionEncoder(3, width), caption_distill_weight=1.0)
    b = _batch()
    with pytest.raises(InputError, match="data.captions=true"):
        m.diffusion_step({k: v for k, v in b.items() if k != "caption"}, generator_for(0, "train", 0, 0))
    with pytest.raises(InputError, match="only one"):
        lit_module(caption_teacher=CaptionEncoder(3, width), caption_encoder=CaptionEncoder(3, width))
    with pytest.raises(InputError, match="cross-attention"):
        lit_module(caption_teacher=CaptionEncoder(3, 7))
    with pytest.raises(InputError, match="caption_distill_weight"):
        lit_module(caption_teacher=CaptionEncoder(3, width), caption_distill_weight=-1)
    m.net.set_gradient_checkpointing(True)
    with pytest.raises(InputError, match="checkpointing"):
        m.diffusion_step(b, generator_for(0, "train", 0, 0))
    with pytest.raises(InputError, match="caption_distill"):
        StageSpec(name="audio_motion", trainable=["audio_projection"], caption_distill=-0.5)
    spec = StageSpec(name="audio_motion", trainable=["audio_projection"], caption_distill=3)
    assert spec.caption_distill == 3.0
    with pytest.raises(InputError, match="caption teacher"):
        StageScheduler(spec).setup(None, lit_module(), "fit")
