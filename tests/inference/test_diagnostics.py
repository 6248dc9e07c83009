"""Tests for flowinfer.inference: diagnose, to_inference_data, neutra_mcmc."""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from flowinfer.inference.arviz import to_inference_data
from flowinfer.inference.autoflow import AutoFlow
from flowinfer.inference.diagnostics import DiagnosticReport, diagnose
from flowinfer.inference.importance import importance_draws
from flowinfer.inference.neutra import neutra_mcmc

# Each test starts from an empty param store and seed 0 (fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("fresh_pyro")


X = torch.tensor([1.2, 0.4, 2.0])


def conjugate_model(x=X):
    # z ~ N(0, 1), x_i | z ~ N(z, 1): posterior N(sum x / (n + 1), 1 / (n + 1)),
    # evidence N(x; 0, I + 11^T).
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.deterministic("z2", 2 * z)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def exact_log_evidence(x=X):
    n = x.shape[0]
    cov = torch.eye(n) + torch.ones(n, n)
    return float(dist.MultivariateNormal(torch.zeros(n), cov).log_prob(x))


def posterior_moments(x=X):
    n = x.shape[0]
    return float(x.sum() / (n + 1)), 1.0 / (n + 1)


def proposal_guide(loc, scale):
    def guide(x=X):
        pyro.sample("z", dist.Normal(loc, scale))

    return guide


def test_exact_guide_has_constant_weights():
    mean, var = posterior_moments()
    report = diagnose(conjugate_model, proposal_guide(mean, math.sqrt(var)), num_samples=500)
    # q equals the posterior: every log weight is log Z, the ESS is n, the ELBO is log Z.
    assert report.log_z == pytest.approx(exact_log_evidence(), abs=1e-4)
    assert report.elbo == pytest.approx(exact_log_evidence(), abs=1e-4)
    assert report.ess_fraction == pytest.approx(1.0, abs=1e-6)
    assert report.khat < 0.5 and report.khat_reading == "good"


def test_log_evidence_within_standard_errors():
    mean, var = posterior_moments()
    # A wider, shifted proposal: weights vary but have light tails (scale > posterior sd).
    report = diagnose(conjugate_model, proposal_guide(mean + 0.2, 1.5 * math.sqrt(var)),
                      num_samples=4000)
    exact = exact_log_evidence()
    assert abs(report.log_z - exact) < 4 * report.log_z_se
    # Jensen: the ELBO lies below log Z by KL(q || p) > 0, here far more than its noise.
    assert report.elbo < exact - 4 * report.elbo_se
    assert report.khat < 0.7
    assert "k-hat" in str(report)


def test_inference_data_groups_and_shapes():
    guide = AutoNormal(conjugate_model)
    guide()
    idata = to_inference_data(conjugate_model, guide, num_samples=300, num_chains=3)
    assert set(idata.groups()) == {"posterior", "sample_stats", "observed_data",
                                   "log_likelihood"}
    assert idata.posterior["z"].shape == (3, 100)
    assert idata.posterior["z2"].shape == (3, 100)
    np.testing.assert_allclose(idata.posterior["z2"].values, 2 * idata.posterior["z"].values,
                               rtol=1e-6)
    assert idata.sample_stats["log_importance_weight"].shape == (3, 100)
    np.testing.assert_allclose(idata.observed_data["x"].values, X.numpy())
    # One log-likelihood per draw and data point, equal to log N(x_i; z, 1).
    ll = idata.log_likelihood["x"].values
    assert ll.shape == (3, 100, 3)
    z = idata.posterior["z"].values[..., None]
    expected = -0.5 * (X.numpy() - z) ** 2 - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(ll, expected, rtol=1e-5, atol=1e-5)
    assert {"khat", "elbo", "log_z"} <= set(idata.attrs)
    summary = az.summary(idata, var_names=["z"], kind="stats")
    assert list(summary.index) == ["z"]


def _fitted_inference_data(**options):
    guide = AutoNormal(conjugate_model)
    guide()
    return to_inference_data(conjugate_model, guide, num_samples=400, **options)


def test_loo_and_waic_work_on_guide_draws():
    idata = _fitted_inference_data()
    loo, waic = az.loo(idata), az.waic(idata)
    assert loo.n_data_points == 3 and waic.n_data_points == 3
    assert np.isfinite(loo.elpd_loo) and np.isfinite(waic.elpd_waic)
    compared = az.compare({"a": idata, "b": _fitted_inference_data()})
    assert list(compared.index) and set(compared.index) == {"a", "b"}


def test_plot_ppc_works_with_posterior_predictive(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idata = _fitted_inference_data(posterior_predictive=True)
    assert idata.posterior_predictive["x"].shape == (4, 100, 3)
    az.plot_ppc(idata, num_pp_samples=20)
    plt.savefig(tmp_path / "ppc.png")
    plt.close("all")


def test_summary_without_single_chain_warning():
    import warnings

    idata = _fitted_inference_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = az.summary(idata, var_names=["z"])
    assert np.isfinite(summary.loc["z", "r_hat"])


def test_plot_posterior_works(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def model():
        pyro.sample("v", dist.Normal(torch.zeros(2, 3), 1.0).to_event(2))

    guide = AutoFlow(model, num_layers=1, hidden=(8,))
    guide()
    idata = to_inference_data(model, guide, num_samples=100)
    assert idata.posterior["v"].shape == (4, 25, 2, 3)
    axes = az.plot_posterior(idata, var_names=["v"])
    assert np.asarray(axes).size == 6
    plt.savefig(tmp_path / "posterior.png")
    plt.close("all")


def test_importance_resampling_moves_towards_posterior():
    mean, var = posterior_moments()
    guide = proposal_guide(mean + 0.4, 1.3 * math.sqrt(var))
    n = 4000
    idata = to_inference_data(conjugate_model, guide, num_samples=n, resample=True)
    draws = idata.posterior["z"].values.reshape(-1)
    ess = float(diagnose(conjugate_model, guide, num_samples=n).ess)
    # Resampled draws follow the posterior; their mean's error is about sd / sqrt(ESS).
    assert abs(draws.mean() - mean) < 4 * math.sqrt(var / ess)
    # The un-resampled draws are off by the proposal's shift (0.4 >> that error).
    plain = to_inference_data(conjugate_model, guide, num_samples=n).posterior["z"].values
    assert abs(plain.mean() - mean) > 0.3


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"num_samples": 1}, ValueError, "num_samples"),
        ({"num_samples": 10.0}, TypeError, "num_samples"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
    ],
)
def test_argument_errors(kwargs, exc, match):
    guide = AutoNormal(conjugate_model)
    with pytest.raises(exc, match=match):
        diagnose(conjugate_model, guide, **kwargs)


def test_type_errors():
    with pytest.raises(TypeError, match="model must be"):
        diagnose(3, AutoNormal(conjugate_model))
    with pytest.raises(ValueError, match="must divide num_samples"):
        to_inference_data(conjugate_model, AutoNormal(conjugate_model), num_samples=10)
    with pytest.raises(TypeError, match="resample"):
        to_inference_data(conjugate_model, AutoNormal(conjugate_model), resample="yes")
    with pytest.raises(TypeError, match="AutoContinuous"):
        neutra_mcmc(conjugate_model, AutoNormal(conjugate_model))
    with pytest.raises(ValueError, match="has not been run"):
        neutra_mcmc(conjugate_model, AutoFlow(conjugate_model))


def test_importance_draws_shapes_with_chunks():
    guide = AutoNormal(conjugate_model)
    guide()
    lw, post, obs = importance_draws(conjugate_model, guide, num_samples=250, chunk_size=100)
    assert lw.shape == (250,) and post["z"].shape == (250,) and set(obs) == {"x"}


def correlated_model():
    # Exact Gaussian posterior with strong correlation: z ~ N(0, I), y ~ N(A z, 0.3^2 I).
    a = torch.tensor([[1.0, 0.9, 0.0], [0.0, 1.0, 0.9]])
    z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    pyro.sample("y", dist.Normal(z @ a.T, 0.3).to_event(1), obs=torch.tensor([1.0, -0.5]))


@pytest.mark.slow
def test_flow_guide_reaches_good_khat_on_gaussian_posterior():
    guide = AutoFlow(correlated_model, num_layers=3, hidden=(32,))
    svi = SVI(correlated_model, guide, pyro.optim.ClippedAdam({"lr": 1e-2, "lrd": 0.999}),
              Trace_ELBO(num_particles=8, vectorize_particles=True))
    for _ in range(1500):
        svi.step()
    report = diagnose(correlated_model, guide, num_samples=4000)
    assert report.khat < 0.5, str(report)
    # A mean-field Gaussian cannot represent the correlation: its k-hat is much worse.
    pyro.clear_param_store()
    normal = AutoNormal(correlated_model)
    svi = SVI(correlated_model, normal, pyro.optim.ClippedAdam({"lr": 1e-2, "lrd": 0.999}),
              Trace_ELBO(num_particles=8, vectorize_particles=True))
    for _ in range(1500):
        svi.step()
    assert diagnose(correlated_model, normal, num_samples=4000).khat > report.khat


def test_neutra_mcmc_returns_chains_for_rhat():
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.deterministic("s", torch.tensor(1.0))

    guide = AutoFlow(model, num_layers=1, hidden=(8,))
    guide()
    idata = neutra_mcmc(model, guide, num_samples=40, warmup=40, num_chains=2,
                        progress=False)
    assert idata.posterior["z"].shape == (2, 40, 2)
    assert idata.sample_stats["diverging"].shape == (2, 40)
    assert idata.posterior["s"].shape == (2, 40)
    rhat = az.rhat(idata, var_names=["z"])["z"].values
    assert rhat.shape == (2,) and np.isfinite(rhat).all()
    # The guide's parameters are left trainable afterwards.
    assert all(p.requires_grad for p in guide.parameters())


def test_reading_separates_a_heavy_tail_from_a_poor_bulk():
    # Weights 1 + 0.005 P with P ~ Pareto(tail index 1.2): the bulk is nearly uniform (high
    # ESS) but the tail has k = 1 / 1.2 = 0.83 > 0.7 (infinite variance).
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(4000, generator=gen, dtype=torch.float64)
    weights = 1.0 + 0.005 * u ** (-1 / 1.2)
    report = DiagnosticReport.from_log_weights(weights.log())
    assert report.khat > 0.7 and report.ess_fraction > 0.5, report
    assert "bulk matches" in str(report)
    # Widely spread weights (a poor bulk) keep the plain advice.
    spread = DiagnosticReport.from_log_weights(3.0 * (-u.log()) ** 1.5)
    assert spread.khat > 0.7 and spread.ess_fraction < 0.5, spread
    assert "misses posterior mass" in str(spread)


def test_neutra_mcmc_has_log_likelihood_and_predictive():
    guide = AutoFlow(conjugate_model, num_layers=1, hidden=(8,))
    guide()
    idata = neutra_mcmc(conjugate_model, guide, num_samples=30, warmup=30, num_chains=2,
                        progress=False, posterior_predictive=True)
    assert idata.log_likelihood["x"].shape == (2, 30, 3)
    assert idata.posterior_predictive["x"].shape == (2, 30, 3)
    np.testing.assert_allclose(idata.observed_data["x"].values, X.numpy())
    assert np.isfinite(az.loo(idata).elpd_loo)
