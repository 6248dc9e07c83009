"""SBC, expected coverage and posterior predictive checks."""

from __future__ import annotations

import pytest
import torch
from npe_models import SIGMA, TRIALS, exact_posterior, gaussian_model

import flowinfer as fi
from flowinfer.npe.calibration import sbc_from_draws
from flowinfer.npe.simulate import simulate


def _exact_draws(num_sims: int, num_draws: int, inflate: float, seed: int):
    """Prior draws of theta, and draws of (a scaled version of) the exact posterior."""
    sims = simulate(gaussian_model, "x", num_sims, seed=seed)
    g = torch.Generator().manual_seed(seed)
    draws = []
    for x in sims.observed["x"]:
        mean, cov = exact_posterior(x)
        chol = torch.linalg.cholesky(cov)
        eps = torch.randn(num_draws, 2, generator=g, dtype=torch.float64)
        draws.append(mean + inflate * eps @ chol.T)
    return sims.latents["theta"].double(), torch.stack(draws, 1)


def test_sbc_passes_for_the_exact_posterior():
    theta, draws = _exact_draws(1000, 99, 1.0, seed=0)
    result = sbc_from_draws(theta, draws)
    assert result.passed, result.verdict
    assert result.ranks.shape == (1000, 2) and result.ranks.max() <= 99


def test_sbc_fails_for_an_over_confident_posterior():
    # Half the posterior sd: the truth falls in the outer rank bins far too often.
    theta, draws = _exact_draws(1000, 99, 0.5, seed=0)
    result = sbc_from_draws(theta, draws)
    assert not result.passed, result.verdict


def test_sbc_fails_for_a_biased_posterior():
    theta, draws = _exact_draws(1000, 99, 1.0, seed=1)
    result = sbc_from_draws(theta, draws + 0.5 * SIGMA / TRIALS**0.5)
    assert not result.passed


def test_sbc_shape_errors():
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        sbc_from_draws(torch.zeros(5, 2), torch.zeros(10, 5, 3))


@pytest.fixture(scope="module")
def small_npe():
    npe = fi.NPE(gaussian_model, "x", flow_options={"num_layers": 2, "hidden": (16,)})
    npe.fit(num_simulations=500, epochs=5, seed=0, progress=False)
    return npe


def test_sbc_coverage_and_predictive_on_an_npe(small_npe, tmp_path):
    result = fi.sbc(small_npe, num_simulations=60, num_posterior_samples=20, seed=0)
    assert result.ranks.shape == (60, 2) and result.names == ["theta[0]", "theta[1]"]
    result.plot(tmp_path / "sbc.png")
    coverage = fi.expected_coverage(small_npe, num_simulations=60, num_posterior_samples=50,
                                    seed=0)
    assert coverage.coverage[0] <= coverage.coverage[-1] == 1.0
    coverage.plot(tmp_path / "coverage.png")
    x = small_npe.simulations.observed["x"][0]
    check = fi.posterior_predictive_check(small_npe, x, num_samples=40, seed=0)
    assert check.predictive["x"].shape == (40, TRIALS, 2)
    assert check.quantiles["x"].shape == (TRIALS, 2)
    check.plot(tmp_path / "ppc.png")
    assert all((tmp_path / f).stat().st_size > 0 for f in ("sbc.png", "coverage.png",
                                                             "ppc.png"))
