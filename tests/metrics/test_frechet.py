import numpy as np
import pytest
import scipy.linalg
import torch

from vexpress.metrics.frechet import frechet_distance, frechet_from_sums, mean_cov


def _reference_fd(a: np.ndarray, b: np.ndarray, ddof: int) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False, ddof=ddof), np.cov(b, rowvar=False, ddof=ddof)
    root, _ = scipy.linalg.sqrtm(s_a @ s_b, disp=False)
    return float(np.real(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root)))


def _sums(x: torch.Tensor):
    x = x.double()
    return x.sum(0), x.T @ x, x.shape[0]


@pytest.mark.parametrize("unbiased", [True, False])
def test_streaming_stats_equal_numpy(unbiased):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)) * rng.uniform(0.5, 3, size=12) + 5.0
    s, o, n = _sums(torch.from_numpy(x))
    mu, cov = mean_cov(s, o, n, unbiased=unbiased)
    np.testing.assert_allclose(mu.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(x, rowvar=False, ddof=1 if unbiased else 0), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("unbiased", [True, False])
def test_frechet_matches_scipy_sqrtm(unbiased):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 10))
    b = rng.normal(size=(350, 10)) @ rng.normal(size=(10, 10)) * 0.5 + 0.3
    ref = _reference_fd(a, b, ddof=1 if unbiased else 0)
    got = float(frechet_from_sums(*_sums(torch.from_numpy(a)), *_sums(torch.from_numpy(b)), unbiased=unbiased))
    assert got == pytest.approx(ref, rel=1e-6)


def test_identical_sets_give_zero_and_shift_gives_squared_norm():
    rng = np.random.default_rng(2)
    a = torch.from_numpy(rng.normal(size=(200, 8)))
    mu, cov = mean_cov(*_sums(a))
    assert float(frechet_distance(mu, cov, mu, cov)) == pytest.approx(0.0, abs=1e-8)
    shift = torch.full((8,), 0.5, dtype=torch.float64)
    assert float(frechet_distance(mu, cov, mu + shift, cov)) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_too_few_samples_raise():
    x = torch.ones(1, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="at least 2"):
        frechet_from_sums(*_sums(x), *_sums(x))
