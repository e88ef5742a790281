"""The Fréchet distance between two sets of features, each summarized as a Gaussian.

``d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (Dowson & Landau 1982); with
Inception features it is the FID of Heusel et al. 2017 ("GANs Trained by a Two Time-Scale
Update Rule Converge to a Local Nash Equilibrium"). kangae uses the penultimate features of
a kangae-trained MNIST-family classifier instead of Inception's.

``Tr((S1 S2)^(1/2))`` is computed as the sum of the square roots of the eigenvalues of the
symmetric matrix ``S1^(1/2) S2 S1^(1/2)`` (same spectrum), in float64: no complex
``sqrtm`` and no Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GaussianStats:
    mean: torch.Tensor  # (D,) float64
    cov: torch.Tensor  # (D, D) float64
    n: int


def gaussian_stats(features: torch.Tensor) -> GaussianStats:
    """Mean and (unbiased) covariance of ``(N, D)`` features, in float64."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need (N, D) features with N >= 2, got shape {tuple(features.shape)}")
    x = features.detach().to(torch.float64)
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / (x.shape[0] - 1)
    return GaussianStats(mean, cov, int(x.shape[0]))


def _psd_sqrt(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_from_stats(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor
                       ) -> float:
    """Fréchet distance (squared, as FID reports it) between N(mu1, cov1) and N(mu2, cov2)."""
    mu1, mu2, cov1, cov2 = (t.detach().to(torch.float64) for t in (mu1, mu2, cov1, cov2))
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (mu1.numel(),) * 2:
        raise ValueError(f"mismatched shapes: means {tuple(mu1.shape)}, {tuple(mu2.shape)}; "
                         f"covariances {tuple(cov1.shape)}, {tuple(cov2.shape)}")
    s1 = _psd_sqrt(cov1)
    inner = s1 @ cov2 @ s1
    tr_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    d2 = (mu1 - mu2).square().sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt
    return max(float(d2), 0.0)


def frechet_distance(a: torch.Tensor | GaussianStats, b: torch.Tensor | GaussianStats) -> float:
    """Fréchet distance between two feature sets ``(N, D)`` (or their :class:`GaussianStats`)."""
    sa = a if isinstance(a, GaussianStats) else gaussian_stats(a)
    sb = b if isinstance(b, GaussianStats) else gaussian_stats(b)
    return frechet_from_stats(sa.mean, sa.cov, sb.mean, sb.cov)
