"""ConditionDropout statistics (house style §4.4): p=0 never, p=1 always, seeded rates within tolerance, exact
joint drop, and a state_dict round-trip reproduces the next mask."""

from __future__ import annotations

import torch

from vexpress.callbacks.condition_dropout import ConditionDropout
from vexpress.training.dropout import DropRates, sample_drop

N = 10_000


def test_zero_never_and_one_always():
    g = torch.Generator().manual_seed(0)
    m, u = sample_drop(DropRates(), N, g)
    assert not (m.reference.any() or m.kps.any() or m.audio.any() or u.any())
    m, u = sample_drop(DropRates(uncond=1.0), N, g)
    assert u.all() and m.reference.all() and m.kps.all() and m.audio.all()
    m, u = sample_drop(DropRates(reference=1.0, kps=1.0), N, g)
    assert m.reference.all() and m.kps.all() and not m.audio.any() and not u.any()


def test_seeded_rates_within_tolerance():
    g = torch.Generator().manual_seed(123)
    rates = DropRates(uncond=0.1, reference=0.3, kps=0.2, audio=0.05)
    m, u = sample_drop(rates, N, g)
    tol = 4 * (0.25 / N) ** 0.5  # 4 sigma of a Bernoulli mean
    assert abs(u.float().mean() - 0.1) < tol
    # a strong condition is dropped alone with p, or with everything in the joint drop
    assert abs(m.reference.float().mean() - (0.1 + 0.9 * 0.3)) < tol
    assert abs(m.kps.float().mean() - (0.1 + 0.9 * 0.2)) < tol
    assert abs(m.audio.float().mean() - (0.1 + 0.9 * 0.05)) < tol
    assert (m.reference[u] & m.kps[u] & m.audio[u]).all()  # joint drop removes every condition


def test_state_dict_round_trip_reproduces_the_next_mask():
    a = ConditionDropout({"uncond": 0.1, "reference": 0.5, "kps": 0.5}, seed=7)
    for _ in range(5):
        a.next_mask(8, 0.0)
    state = a.state_dict()
    expect, _, _ = a.next_mask(8, 0.3)
    b = ConditionDropout({"uncond": 0.1, "reference": 0.5, "kps": 0.5}, seed=0)
    b.load_state_dict(state)
    got, _, _ = b.next_mask(8, 0.3)
    for f in ("reference", "kps", "audio"):
        assert torch.equal(getattr(expect, f), getattr(got, f))
    # different DDP ranks draw different masks from the same counter
    c = ConditionDropout({"reference": 0.5}, seed=7)
    c.load_state_dict(state)
    other, _, _ = c.next_mask(64, 0.3, rank=1)
    d = ConditionDropout({"reference": 0.5}, seed=7)
    d.load_state_dict(state)
    same_rank0, _, _ = d.next_mask(64, 0.3, rank=0)
    assert not torch.equal(other.reference, same_rank0.reference)


def test_linear_ramp_applies_the_scheduled_rate():
    cb = ConditionDropout({"reference": {"start": 0.0, "end": 1.0}}, seed=1)
    m0, _, r0 = cb.next_mask(N, 0.0)
    m1, _, r1 = cb.next_mask(N, 1.0)
    mh, _, rh = cb.next_mask(N, 0.5)
    assert r0.reference == 0.0 and r1.reference == 1.0 and rh.reference == 0.5
    assert not m0.reference.any() and m1.reference.all()
    assert abs(mh.reference.float().mean() - 0.5) < 0.04
