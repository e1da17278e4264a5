"""Guidance branches and their combination."""

from __future__ import annotations

import pytest
import torch

from vexpress.pipelines.guidance import Guidance


def test_official_cfg_two_branches():
    g = Guidance(3.5)
    assert g.branches == ("uncond", "cond")
    drop = g.drop_mask()
    assert drop.reference.tolist() == [True, False] and drop.kps.tolist() == [True, False]
    assert drop.audio.tolist() == [True, False]
    u, c = torch.randn(1, 4, 3, 2, 2), torch.randn(1, 4, 3, 2, 2)
    assert torch.equal(g.combine(torch.cat([u, c])), u + 3.5 * (c - u))


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_no_guidance_at_or_below_one(scale):
    g = Guidance(scale)
    assert g.branches == ("cond",)
    c = torch.randn(1, 4, 2, 2, 2)
    assert torch.equal(g.combine(c), c)


def test_separate_audio_scale_three_branches():
    g = Guidance(2.0, audio_scale=5.0)
    assert g.branches == ("uncond", "no_audio", "cond")
    drop = g.drop_mask()
    assert drop.reference.tolist() == [True, False, False]
    assert drop.kps.tolist() == [True, False, False]
    assert drop.audio.tolist() == [True, True, False]
    u, n, c = (torch.randn(1, 4, 2, 2, 2, dtype=torch.float64) for _ in range(3))
    out = g.combine(torch.cat([u, n, c]))
    torch.testing.assert_close(out, u + 2.0 * (n - u) + 5.0 * (c - n))


def test_audio_only_guidance_needs_no_unconditional_branch():
    g = Guidance(1.0, audio_scale=4.0)
    assert g.branches == ("no_audio", "cond")
    n, c = torch.randn(1, 4, 2, 2, 2), torch.randn(1, 4, 2, 2, 2)
    torch.testing.assert_close(g.combine(torch.cat([n, c])), n + 4.0 * (c - n))


def test_equal_scales_equal_official():
    u, n, c = (torch.randn(1, 4, 2, 2, 2, dtype=torch.float64) for _ in range(3))
    three = Guidance(3.0, audio_scale=3.0 + 1e-12).combine(torch.cat([u, n, c]))
    torch.testing.assert_close(three, Guidance(3.0).combine(torch.cat([u, c])))


def test_branch_count_mismatch():
    with pytest.raises(ValueError):
        Guidance(3.5).combine(torch.randn(3, 4, 1, 1, 1))
