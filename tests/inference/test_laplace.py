"""The Laplace start (flowinfer.inference.laplace) and AutoFlow's warm_start option."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from flowinfer import AutoFlow, diagnose
from flowinfer.inference.laplace import (
    find_mode,
    gaussian_elbo,
    inverse_hessian_tril,
    laplace_start,
)

SMALL = {"num_layers": 2, "hidden": (16,)}


def _gaussian(mean: torch.Tensor, prec: torch.Tensor):
    return lambda u: -0.5 * (u - mean) @ prec @ (u - mean)


def test_laplace_of_a_gaussian_is_exact():
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=torch.float64)
    prec = a @ a.T + 0.5 * torch.eye(4, dtype=torch.float64)
    mean = torch.randn(4, dtype=torch.float64) * 10
    start = laplace_start(_gaussian(mean, prec), torch.zeros(4, dtype=torch.float64))
    assert torch.allclose(start.loc, mean, atol=1e-6)
    assert start.scale_tril is not None
    assert torch.allclose(start.scale_tril @ start.scale_tril.T, torch.linalg.inv(prec),
                          atol=1e-8)
    # Lower triangular with a positive diagonal: a valid LowerCholeskyAffine factor.
    assert torch.equal(start.scale_tril, start.scale_tril.tril())
    assert bool((start.scale_tril.diagonal() > 0).all())


def test_find_mode_backs_off_from_non_finite_values():
    # log density -inf left of 0.5: the search must keep the best finite point, never NaN.
    def log_density(u):
        return torch.where(u[0] > 0.5, -(u[0] - 2.0) ** 2, torch.tensor(-math.inf))

    mode, value, evals = find_mode(log_density, torch.tensor([1.0]))
    assert math.isfinite(value) and abs(float(mode[0]) - 2.0) < 1e-4 and evals > 0


def test_saddle_has_no_laplace_scale():
    tril, reason = inverse_hessian_tril(lambda u: u[0] ** 2 - u[1] ** 2, torch.zeros(2))
    assert tril is None and "positive definite" in reason


def test_gaussian_elbo_of_the_exact_posterior_is_log_z():
    # log density = log N(u; m, S) + 3: the exact Gaussian's log weights are all 3.
    mean, cov = torch.tensor([1.0, -1.0]), torch.tensor([[2.0, 0.3], [0.3, 0.5]])
    normal = torch.distributions.MultivariateNormal(mean, cov)
    eps = torch.randn(64, 2)
    elbo = gaussian_elbo(lambda u: normal.log_prob(u) + 3.0, mean,
                         torch.linalg.cholesky(cov), eps)
    assert abs(elbo - 3.0) < 1e-5
    # Any other Gaussian is worse (Jensen), by more than the float32 noise.
    assert gaussian_elbo(lambda u: normal.log_prob(u) + 3.0, mean + 1.0,
                         torch.linalg.cholesky(cov), eps) < 3.0 - 0.1


# ------------------------------------------------------------------------ AutoFlow warm start
N_OBS = 2000
_X = torch.linspace(-1.0, 1.0, N_OBS, dtype=torch.float64)


def narrow_regression(y):
    # Many rows and a far-off intercept: the posterior sd of b is ~0.01 at distance 40 from
    # the prior's median, the case where AutoNormal's start needs thousands of steps.
    b = pyro.sample("b", dist.Normal(torch.zeros(2, dtype=torch.float64), 100.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(5.0, dtype=torch.float64)))
    mean = b[..., :1] + b[..., 1:] * _X
    pyro.sample("y", dist.Normal(mean, sigma[..., None]).to_event(1), obs=y)


def _narrow_data():
    gen = torch.Generator().manual_seed(0)
    return 40.0 - 3.0 * _X + 0.5 * torch.randn(N_OBS, generator=gen, dtype=torch.float64)


def test_warm_start_on_a_narrow_far_off_posterior():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    y = _narrow_data()
    guide = AutoFlow(narrow_regression, **SMALL)
    guide(y)
    info = guide.warm_start_info
    assert info["chosen"] == "laplace", info
    assert info["elbo"]["laplace"] > info["elbo"]["init"]
    # Least squares is the mode of b up to the N(0, 100^2) prior (a 1e-8 relative pull).
    design = torch.stack([torch.ones_like(_X), _X], -1)
    b_ls = torch.linalg.lstsq(design, y[:, None]).solution[:, 0]
    assert torch.allclose(guide.warm_loc[:2], b_ls, atol=1e-5)
    # The fresh guide is already a good importance sampler (k-hat < 0.5, Yao et al. 2018):
    # this posterior is Gaussian up to the sigma direction.
    report = diagnose(narrow_regression, guide, y, num_samples=2000)
    assert report.khat < 0.5, report
    # A short SVI run from there stays in posterior-sd units: still < 0.5.
    svi = SVI(narrow_regression, guide, pyro.optim.Adam({"lr": 1e-2}),
              Trace_ELBO(num_particles=4, vectorize_particles=True))
    for _ in range(100):
        assert math.isfinite(svi.step(y))
    assert diagnose(narrow_regression, guide, y, num_samples=2000).khat < 0.5


def test_plain_start_is_kept_on_request_and_with_subsampling():
    y = _narrow_data()
    pyro.clear_param_store()
    plain = AutoFlow(narrow_regression, warm_start=None, **SMALL)
    plain(y)
    assert plain.warm_start_info is None and plain.warm_scale_tril is None

    def subsampled(y):
        b = pyro.sample("b", dist.Normal(torch.zeros(2, dtype=torch.float64), 100.0)
                        .to_event(1))
        with pyro.plate("rows", N_OBS, subsample_size=100) as idx:
            mean = b[0] + b[1] * _X[idx]
            pyro.sample("y", dist.Normal(mean, 0.5), obs=y[idx])

    pyro.clear_param_store()
    guide = AutoFlow(subsampled, **SMALL)
    guide(y)
    assert guide.warm_start_info["chosen"] == "init"
    assert "subsamples" in guide.warm_start_info["message"]


def test_warm_start_is_skipped_when_hidden_sites_make_the_density_random():
    # AutoGuideList style: this guide sees only "b"; "noise" is blocked and sampled afresh
    # on every model run, so the log density at fixed b is random.
    y = _narrow_data()

    def model(y):
        b = pyro.sample("b", dist.Normal(torch.zeros(2, dtype=torch.float64), 100.0)
                        .to_event(1))
        noise = pyro.sample("noise", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        mean = b[..., :1] + b[..., 1:] * _X + noise
        pyro.sample("y", dist.Normal(mean, 0.5).to_event(1), obs=y)

    pyro.clear_param_store()
    guide = AutoFlow(pyro.poutine.block(model, hide=["noise"]), **SMALL)
    guide(y)
    assert guide.warm_start_info["chosen"] == "init"
    assert "random at fixed latents" in guide.warm_start_info["message"]


def test_warm_start_argument_is_checked():
    with pytest.raises(ValueError, match="warm_start must be one of"):
        AutoFlow(narrow_regression, warm_start="map")


def test_unbounded_density_has_no_mode():
    # log density u: L-BFGS runs off to large u; no mode, so no Laplace and no "mode" start.
    start = laplace_start(lambda u: u.sum(), torch.zeros(2))
    assert not start.converged and start.scale_tril is None
    assert "did not converge" in start.message
    pyro.clear_param_store()

    def flat(y=None):
        # An improper posterior: flat prior on a positive scale, no data.
        pyro.sample("b", dist.ImproperUniform(dist.constraints.positive, (), ()))

    from flowinfer import init_to_median_or_zero

    guide = AutoFlow(flat, init_loc_fn=init_to_median_or_zero, **SMALL)
    guide()
    assert guide.warm_start_info["chosen"] == "init"
    assert torch.isfinite(guide.get_posterior().sample((10,))).all()


def test_laplace_start_works_under_no_grad():
    # A guide's first call can happen inside torch.no_grad (Predictive): the search still runs.
    with torch.no_grad():
        start = laplace_start(_gaussian(torch.ones(2), torch.eye(2)), torch.zeros(2))
    assert start.converged and torch.allclose(start.loc, torch.ones(2), atol=1e-4)
