"""Fréchet distance between Gaussians fitted to feature sets, with streaming float64 statistics.

The same maths serves FID (image features), FVD (video features) and any other feature space: each side keeps
``sum`` (d,), ``outer_sum`` (d, d) and ``n`` in float64, so batches can arrive in any order and split, and
distributed ranks reduce their states by plain summation.

Distance: ``||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2})``. The trace of the matrix square root
is computed from the eigenvalues of the symmetric PSD matrix ``S_a^{1/2} S_b S_a^{1/2}`` (similar to ``S_a S_b``),
which is better conditioned than ``scipy.linalg.sqrtm`` of the non-symmetric product and has no complex part.
"""

from __future__ import annotations

import warnings
from typing import Tuple

import torch
from torch import Tensor


def mean_cov(feature_sum: Tensor, outer_sum: Tensor, n: int | Tensor, unbiased: bool = True) -> Tuple[Tensor, Tensor]:
    """Mean (d,) and covariance (d, d) from streaming sums.

    Args:
        feature_sum: ``sum_i x_i`` (d,).
        outer_sum: ``sum_i x_i x_i^T`` (d, d).
        n: number of samples.
        unbiased: divide by ``n - 1`` (``np.cov``, torchmetrics FID) instead of ``n`` (StyleGAN-V's FeatureStats).
    """
    n = float(n)
    mu = feature_sum.double() / n
    cov = outer_sum.double() - n * torch.outer(mu, mu)
    cov = cov / (n - 1.0 if unbiased else n)
    return mu, 0.5 * (cov + cov.T)


def _psd_sqrt(mat: Tensor) -> Tensor:
    evals, evecs = torch.linalg.eigh(0.5 * (mat + mat.T))
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def trace_sqrt_product(sigma_a: Tensor, sigma_b: Tensor) -> Tensor:
    """``tr((S_a S_b)^{1/2})`` for symmetric PSD ``S_a``, ``S_b`` (float64)."""
    root_a = _psd_sqrt(sigma_a.double())
    inner = root_a @ sigma_b.double() @ root_a
    evals = torch.linalg.eigvalsh(0.5 * (inner + inner.T))
    return evals.clamp(min=0).sqrt().sum()


def frechet_distance(mu_a: Tensor, sigma_a: Tensor, mu_b: Tensor, sigma_b: Tensor) -> Tensor:
    """Fréchet distance between N(mu_a, sigma_a) and N(mu_b, sigma_b), as a float64 scalar tensor."""
    mu_a, mu_b = mu_a.double(), mu_b.double()
    sigma_a, sigma_b = sigma_a.double(), sigma_b.double()
    diff = mu_a - mu_b
    value = diff.dot(diff) + torch.trace(sigma_a) + torch.trace(sigma_b) - 2.0 * trace_sqrt_product(sigma_a, sigma_b)
    return value.clamp(min=0.0)


def frechet_from_sums(
    sum_a: Tensor, outer_a: Tensor, n_a: int | Tensor,
    sum_b: Tensor, outer_b: Tensor, n_b: int | Tensor,
    unbiased: bool = True, what: str = "Fréchet distance",
) -> Tensor:
    """Fréchet distance of two feature sets given as streaming sums; raises for fewer than 2 samples a side."""
    n_a, n_b = int(n_a), int(n_b)
    if n_a < 2 or n_b < 2:
        raise RuntimeError(f"{what} needs at least 2 samples on each side (got real={n_a}, generated={n_b})")
    d = sum_a.shape[-1]
    if min(n_a, n_b) < d + 1:
        warnings.warn(
            f"{what}: {min(n_a, n_b)} samples for {d}-d features, the covariance is rank-deficient and the value is "
            "biased upwards; report N next to it",
            stacklevel=2,
        )
    mu_a, cov_a = mean_cov(sum_a, outer_a, n_a, unbiased)
    mu_b, cov_b = mean_cov(sum_b, outer_b, n_b, unbiased)
    return frechet_distance(mu_a, cov_a, mu_b, cov_b)
