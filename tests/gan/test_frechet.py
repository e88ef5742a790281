import numpy as np
import pytest
import torch
from scipy import linalg

from kangae.gan import frechet_distance, frechet_from_stats, gaussian_stats


def test_diagonal_gaussians_closed_form() -> None:
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    v1, v2 = torch.tensor([1.0, 4.0, 9.0]), torch.tensor([4.0, 1.0, 1.0])
    # |mu1 - mu2|^2 + sum (sqrt v1 - sqrt v2)^2 = 5 + (1 + 1 + 4)
    assert frechet_from_stats(mu1, torch.diag(v1), mu2, torch.diag(v2)) == pytest.approx(11.0, abs=1e-9)


def test_full_covariances_match_scipy_sqrtm() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = a @ a.T, b @ b.T + np.eye(6)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    ref = ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    got = frechet_from_stats(*(torch.from_numpy(t) for t in (m1, c1, m2, c2)))
    assert got == pytest.approx(ref, rel=1e-8)


def test_samples_of_gaussians_converge_to_closed_form() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, 2, generator=g, dtype=torch.float64)
    y = torch.randn(200_000, 2, generator=g, dtype=torch.float64) * 2 + torch.tensor([3.0, 0.0],
                                                                                      dtype=torch.float64)
    # N(0, I) vs N((3, 0), 4I): 9 + 2 * (1 - 2)^2 = 11
    assert frechet_distance(x, y) == pytest.approx(11.0, rel=0.01)


def test_set_against_itself_and_shifted() -> None:
    x = torch.randn(500, 16, generator=torch.Generator().manual_seed(1))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    shift = torch.arange(16.0) / 4
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift.square().sum()), rel=1e-6)
    stats = gaussian_stats(x)
    assert frechet_distance(stats, x) == pytest.approx(0.0, abs=1e-6)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="mismatched"):
        frechet_from_stats(torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(3))
