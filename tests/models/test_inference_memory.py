"""Inference memory reductions of the network change no number: chunked layers equal the unchunked ones.

Without autograd, the feed-forward, the self/audio attention, the reference attention and the temporal attention
split their rows into chunks above ``vexpress.models.attention.INFERENCE_CHUNK_ELEMENTS`` (see that module). Here
the threshold is set so low that every layer chunks, and the outputs are compared with the unchunked ones; the
official parity tests run the unchunked path at their sizes (run them with VEXPRESS_INFERENCE_CHUNK_ELEMENTS=4096
to check the chunked path against the official vectors).
"""

from __future__ import annotations

import pytest
import torch

from vexpress.models import DropMask, VExpressConfig, VExpressNet, attention


def _net() -> VExpressNet:
    torch.manual_seed(0)
    net = VExpressNet(VExpressConfig.tiny()).eval()
    with torch.no_grad():  # the zero-initialised output projections would hide the motion and audio paths
        for name, p in net.named_parameters():
            if "proj_out" in name or "to_out" in name or "conv_out" in name:
                p.normal_(0.0, 0.05)
    return net


def _run(net: VExpressNet, ref_bank, **kw) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    b, f, h = 2, 4, 8
    lat = torch.randn(b, 4, f, h, h, generator=g)
    tokens = torch.randn(b, f, 5, net.config.unet["cross_attention_dim"], generator=g)
    kps = 0.1 * torch.randn(b, net.config.unet["block_out_channels"][0], f, h, h, generator=g)
    drop = DropMask(torch.tensor([True, False]), torch.tensor([True, False]), torch.tensor([True, False]))
    with torch.no_grad():
        return net.denoising_unet(lat, torch.tensor([500]), audio_tokens=tokens, kps_features=kps,
                                  reference=ref_bank, drop=drop, reference_attention_weight=0.95,
                                  audio_attention_weight=3.0, **kw)


@pytest.mark.slow
def test_chunked_inference_equals_unchunked(monkeypatch):
    net = _net()
    with torch.no_grad():
        bank = net.encode_reference(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)))
    full = _run(net, bank)
    calls = []
    real = attention.inference_chunk

    def spy(rows, per_row, device=None):
        step = real(rows, per_row, device)
        calls.append(step)
        return step

    monkeypatch.setattr(attention, "INFERENCE_CHUNK_ELEMENTS", 4096)
    for module in ("vexpress.models.attention", "vexpress.models.motion_module", "vexpress.models.transformer_3d"):
        monkeypatch.setattr(f"{module}.inference_chunk", spy)
    chunked = _run(net, bank)
    # the large layers (first and last levels) took the chunked path, the 1x1-token middle ones may not
    assert sum(step is not None for step in calls) >= len(calls) // 2
    err = (chunked - full).abs().max() / full.abs().max()
    assert err < 1e-5, f"chunked inference differs by {err:.2e}"


def test_training_does_not_chunk(monkeypatch):
    monkeypatch.setattr(attention, "INFERENCE_CHUNK_ELEMENTS", 256)
    with torch.enable_grad():
        assert attention.inference_chunk(1000, 1000) is None  # autograd keeps everything anyway
    with torch.no_grad():
        assert attention.inference_chunk(1000, 1000) == 1  # one row per chunk at this threshold
        assert attention.inference_chunk(2, 10) is None  # small enough: at once


def test_cuda_does_not_chunk_unless_asked(monkeypatch):
    """The CUDA figures (docs/gpu.md) were measured unchunked; chunking there is opt-in."""
    monkeypatch.setattr(attention, "INFERENCE_CHUNK_ELEMENTS", 256)
    cuda = torch.device("cuda")
    with torch.no_grad():
        assert attention.inference_chunk(1000, 1000, cuda) is None
        assert attention.inference_chunk(1000, 1000, torch.device("cpu")) == 1
        monkeypatch.setattr(attention, "INFERENCE_CHUNK_ELEMENTS_CUDA", 2000)
        assert attention.inference_chunk(1000, 1000, cuda) == 2
