"""fi.infer: robust start, modes, VI route, escalation, InferenceData groups, errors.

Statistical tolerances are a few Monte Carlo standard errors: the returned draws are a
resample of importance draws, so a mean's error is about ``sd * sqrt(1/ESS + 1/n)``.
"""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

import flowinfer as fi

pytestmark = pytest.mark.usefixtures("fresh_pyro")

#: Small and quick: a one-layer flow and short budgets (the defaults are for real models).
FAST = {"flow_options": {"num_layers": 1, "hidden": (16,)}, "max_vi_steps": 150,
        "num_starts": 3, "check_draws": 1000, "min_ess": 200, "num_draws": 400,
        "progress": False, "report": False, "seed": 0}

Y = torch.tensor([0.3, 1.1, -0.4, 0.9])


def gaussian_model(y=Y):
    # mu ~ N(0, 2^2), y_i ~ N(mu, 1): posterior N(sum y / (n + 1/4), 1 / (n + 1/4)).
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    pyro.deterministic("mu2", 2 * mu)
    with pyro.plate("data", y.shape[-1]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def exact_gaussian(y=Y):
    prec = y.shape[-1] + 0.25
    return float(y.sum() / prec), math.sqrt(1 / prec)


X4 = torch.full((5,), 4.0)


def raising_model(x=X4):
    # sd = 1 - 0.2 z is negative for z > 5: Pyro raises ValueError there, and the line
    # search from the prior median (z = 0) towards the posterior near z = 4 can step there.
    z = pyro.sample("z", dist.Normal(0.0, 3.0))
    with pyro.plate("data", x.shape[-1]):
        pyro.sample("x", dist.Normal(z, 1.0 - 0.2 * z), obs=x)


def nan_model():
    # log(1 - z^2) is NaN for |z| > 1; the steep linear term makes the first line-search
    # step from the prior median (z near 0) land far outside, where the factor is NaN.
    z = pyro.sample("z", dist.Normal(0.0, 0.3))
    pyro.factor("f", 3.0 * torch.log(1.0 - z ** 2) + 40.0 * z)


def test_autoflow_warm_start_survives_a_raising_model():
    guide = fi.AutoFlow(raising_model, num_layers=1, hidden=(8,))
    svi = SVI(raising_model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    assert math.isfinite(svi.step())
    assert guide.warm_start_info is not None and guide.warm_start_info["chosen"] in (
        "init", "mode", "laplace")
    # The search found the mode near z = 4 despite the invalid region beyond z = 5.
    assert guide.warm_start_info["chosen"] == "laplace"


def test_autoflow_warm_start_survives_nan_and_says_why():
    guide = fi.AutoFlow(nan_model, num_layers=1, hidden=(8,), init_scale=0.05)
    svi = SVI(nan_model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    assert math.isfinite(svi.step())
    # The mode (z near 0.9) was found although the search met NaN on its way; the Gaussian
    # candidates there put mass beyond z = 1 (NaN), so the start says why it kept init.
    info = guide.warm_start_info
    assert math.isfinite(info["log_joint_at_mode"]) and info["log_joint_at_mode"] > 20
    assert info["chosen"] == "init" and "non-finite ELBO" in info["message"]


def test_autoflow_warm_start_falls_back_with_a_reason_without_a_mode():
    def unbounded(x=None):
        x = torch.zeros(1) if x is None else x
        # log N(0; 0, 0.5 - z) grows without bound as z -> 0.5, and Pyro raises beyond:
        # there is no mode, the search must stop and say so.
        z = pyro.sample("z", dist.Normal(0.0, 10.0))
        pyro.sample("x", dist.Normal(0.0, 0.5 - z).expand([1]).to_event(1), obs=x)

    from pyro.infer.autoguide import init_to_value

    guide = fi.AutoFlow(unbounded, num_layers=1, hidden=(8,),
                        init_loc_fn=init_to_value(values={"z": torch.tensor(0.0)}))
    guide()
    assert guide.warm_start_info["chosen"] == "init"
    assert "did not converge" in guide.warm_start_info["message"]


def test_infer_survives_raising_and_nan_models():
    for model in (raising_model, nan_model):
        # route="vi" keeps it quick; the NUTS stage evaluates the model through the same
        # safe potential (test_forced_escalation_returns_chains_with_rhat runs it).
        idata = fi.infer(model, **{**FAST, "route": "vi", "max_vi_steps": 50})
        assert np.isfinite(idata.posterior["z"].values).all()
        assert idata.attrs["route"] == "vi" and "fi.infer" in idata.attrs["report"]


def test_gaussian_posterior_takes_vi_route_with_exact_moments():
    idata = fi.infer(gaussian_model, **{**FAST, "num_draws": 2000, "check_draws": 4000})
    assert idata.attrs["route"] == "vi" and idata.attrs["checks_passed"] == 1
    mean, sd = exact_gaussian()
    draws = idata.posterior["mu"].values.reshape(-1)
    ess = float(idata.attrs["ess"])
    se = sd * math.sqrt(1 / ess + 1 / draws.size)
    assert abs(draws.mean() - mean) < 4 * se
    # sd of a sample sd is about sd / sqrt(2 n_eff).
    assert abs(draws.std() - sd) < 4 * sd * math.sqrt(0.5 / ess + 0.5 / draws.size)
    np.testing.assert_allclose(idata.posterior["mu2"].values, 2 * idata.posterior["mu"].values,
                               rtol=1e-6)


def test_inference_data_groups_and_shapes():
    idata = fi.infer(gaussian_model, **{**FAST, "num_chains": 2, "posterior_predictive": True})
    assert {"posterior", "sample_stats", "log_likelihood", "observed_data",
            "posterior_predictive"} <= set(idata.groups())
    assert idata.posterior["mu"].shape == (2, 200)
    assert idata.posterior["mu2"].shape == (2, 200)
    assert idata.log_likelihood["y"].shape == (2, 200, 4)
    assert idata.posterior_predictive["y"].shape == (2, 200, 4)
    np.testing.assert_allclose(idata.observed_data["y"].values, Y.numpy())
    for key in ("route", "khat", "ess", "timings", "report", "num_modes", "checks_passed"):
        assert key in idata.attrs, key
    assert np.isfinite(az.loo(idata).elpd_loo)
    assert "fi.infer: route" in idata.attrs["report"]


def test_forced_escalation_returns_chains_with_rhat():
    idata = fi.infer(gaussian_model, **{**FAST, "route": "nuts", "num_draws": 200,
                                        "warmup": 100, "num_chains": 2})
    assert idata.attrs["route"] == "nuts"
    assert idata.attrs["kernel"] in ("dense", "neutra")
    assert idata.posterior["mu"].shape == (2, 100)
    assert math.isfinite(float(idata.attrs["rhat_max"]))
    assert idata.sample_stats["diverging"].shape == (2, 100)
    rhat = float(az.rhat(idata, var_names=["mu"])["mu"])
    assert math.isfinite(rhat)


def test_forced_neutra_kernel():
    idata = fi.infer(gaussian_model, **{**FAST, "route": "nuts", "kernel": "neutra",
                                        "num_draws": 40, "warmup": 20, "num_chains": 2})
    assert idata.attrs["kernel"] == "neutra" and idata.posterior["mu"].shape == (2, 20)


def test_two_models_in_one_session():
    def other(y=None):
        y = torch.tensor([1.0, 2.0]) if y is None else y
        z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.sample("y", dist.Normal(z[..., :2].sum(-1, keepdim=True), 1.0).to_event(1),
                    obs=y)

    a = fi.infer(gaussian_model, **FAST)
    b = fi.infer(other, **FAST)
    assert a.posterior["mu"].shape[-1] == 100 and b.posterior["z"].shape[-1] == 3
    # The caller's param store is left alone.
    assert len(list(pyro.get_param_store().keys())) == 0


def test_two_autoflow_guides_for_two_models_coexist():
    def m2():
        pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))

    g1 = fi.AutoFlow(gaussian_model, num_layers=1, hidden=(8,))
    g2 = fi.AutoFlow(m2, num_layers=1, hidden=(8,))
    s1 = SVI(gaussian_model, g1, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    s2 = SVI(m2, g2, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(3):
        s1.step()
        s2.step()
    assert g1()["mu"].shape == () and g2()["z"].shape == (3,)
    assert g1.loc is not g2.loc


def bimodal_model():
    # Prior N(0, 10^2) times a mixture 0.3 N(-4, 0.5^2) + 0.7 N(4, 0.5^2): by symmetry of
    # the prior the posterior's mode shares are exactly 0.3 and 0.7.
    z = pyro.sample("z", dist.Normal(0.0, 10.0))
    comp = torch.stack([math.log(0.3) + dist.Normal(-4.0, 0.5).log_prob(z),
                        math.log(0.7) + dist.Normal(4.0, 0.5).log_prob(z)], -1)
    pyro.factor("mix", torch.logsumexp(comp, -1))


@pytest.mark.slow
def test_two_mode_model_gets_both_modes_with_their_shares():
    idata = fi.infer(bimodal_model, **{**FAST, "num_starts": 6, "num_draws": 2000,
                                       "check_draws": 4000, "max_vi_steps": 300})
    assert int(idata.attrs["num_modes"]) == 2
    draws = idata.posterior["z"].values.reshape(-1)
    share = float((draws > 0).mean())
    ess = float(idata.attrs["ess"])
    se = math.sqrt(0.21 * (1 / ess + 1 / draws.size))
    assert abs(share - 0.7) < 4 * se, (share, se, idata.attrs["report"])


def three_mode_model():
    # Modes at -8, 0 and 8 under a N(0, 10) prior: a mode on the far side of the prior is
    # found only if some start lands in its basin (the antithetic starts make sure of it).
    z = pyro.sample("z", dist.Normal(0.0, 10.0))
    comp = torch.stack([math.log(w) + dist.Normal(m, 0.5).log_prob(z)
                        for m, w in ((-8.0, 0.2), (0.0, 0.5), (8.0, 0.3))], -1)
    pyro.factor("mix", torch.logsumexp(comp, -1))


@pytest.mark.parametrize("seed", [0, 1])
def test_three_separated_modes_get_their_exact_shares(seed):
    idata = fi.infer(three_mode_model, **{**FAST, "num_starts": 12, "num_draws": 2000,
                                          "seed": seed})
    assert int(idata.attrs["num_modes"]) == 3, idata.attrs["report"]
    draws = idata.posterior["z"].values.reshape(-1)
    # Exact share of component k: w_k N(m_k; 0, sqrt(10^2 + 0.5^2)), normalised.
    marginal = dist.Normal(0.0, math.sqrt(100.25))
    raw = torch.tensor([w * float(marginal.log_prob(torch.tensor(m)).exp())
                        for m, w in ((-8.0, 0.2), (0.0, 0.5), (8.0, 0.3))])
    exact = raw / raw.sum()
    ess = float(idata.attrs["ess"])
    for (low, high), p in zip(((-20, -4), (-4, 4), (4, 20)), exact.tolist(), strict=True):
        share = float(((draws > low) & (draws < high)).mean())
        se = math.sqrt(p * (1 - p) * (1 / ess + 1 / draws.size))
        assert abs(share - p) < 4 * se, (share, p, se, idata.attrs["report"])


def test_missed_mode_is_seen():
    # One start only: the search cannot find the second mode, but a start in each proves
    # the check: a guide fitted to one mode gives the other a huge importance weight.
    from flowinfer.inference.modes import find_modes
    from flowinfer.inference.stages import Options, Probe

    opts = Options(num_draws=100, num_chains=2, route="auto", reparam="auto", flow="iaf",
                   flow_options={"num_layers": 1, "hidden": (8,)}, num_starts=1,
                   max_modes=1, max_vi_steps=100, num_particles=4, lr=5e-3,
                   check_draws=500, khat_threshold=0.7, min_ess=100, warmup=10,
                   kernel="auto", posterior_predictive=False, progress=False)
    probe = Probe(bimodal_model, (), {}, opts)
    both = find_modes(probe.log_joint, [("left", torch.tensor([-4.0])),
                                        ("right", torch.tensor([4.0]))], max_modes=1)
    assert len(both.all_modes) == 2 and len(both.modes) == 1
    fits = probe.fit_guides(both)
    check = probe.check(fits, both)
    assert check.missed_mass and not check.passed


@pytest.mark.parametrize("options, exc, match", [
    ({"route": "fast"}, ValueError, "route"),
    ({"num_draws": 0}, ValueError, "num_draws"),
    ({"num_draws": 10.5}, TypeError, "num_draws"),
    ({"kernel": "hmc"}, ValueError, "kernel"),
    ({"lr": -1.0}, ValueError, "lr"),
    ({"flow": "no-such-flow"}, ValueError, "no-such-flow"),
    ({"flow_options": 3}, TypeError, "flow_options"),
    ({"posterior_predictive": "yes"}, TypeError, "posterior_predictive"),
])
def test_bad_options(options, exc, match):
    with pytest.raises(exc, match=match):
        fi.infer(gaussian_model, **options)


def test_model_errors_are_clear():
    with pytest.raises(TypeError, match="model must be"):
        fi.infer(3)

    def discrete():
        pyro.sample("k", dist.Bernoulli(0.5))

    with pytest.raises(ValueError, match="discrete latent"):
        fi.infer(discrete, progress=False, report=False)

    def subsampled():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 100, subsample_size=10):
            pyro.sample("x", dist.Normal(z, 1.0), obs=torch.zeros(10))

    with pytest.raises(ValueError, match="subsample"):
        fi.infer(subsampled, progress=False, report=False)


A = torch.tensor([[1.0, 0.95, 0.0], [0.0, 1.0, 0.95]], dtype=torch.float64)
Y2 = torch.tensor([1.0, -0.5], dtype=torch.float64)


def correlated_model():
    # z ~ N(0, I), y ~ N(A z, 0.1^2 I): a correlated Gaussian posterior with exact moments.
    z = pyro.sample("z", dist.Normal(torch.zeros(3, dtype=torch.float64), 1.0).to_event(1))
    pyro.sample("y", dist.Normal(z @ A.T, 0.1).to_event(1), obs=Y2)


@pytest.mark.slow
def test_default_settings_match_exact_moments_of_a_correlated_gaussian():
    prec = torch.eye(3, dtype=torch.float64) + A.T @ A / 0.01
    cov = torch.linalg.inv(prec)
    mean = cov @ A.T @ Y2 / 0.01
    idata = fi.infer(correlated_model, seed=1, progress=False, report=False)
    assert idata.attrs["route"] == "vi" and idata.attrs["checks_passed"] == 1
    draws = torch.as_tensor(idata.posterior["z"].values.reshape(-1, 3))
    sd = cov.diagonal().sqrt()
    n_eff = 1 / (1 / float(idata.attrs["ess"]) + 1 / draws.shape[0])
    assert ((draws.mean(0) - mean).abs() < 4 * sd / math.sqrt(n_eff)).all()
    assert ((draws.std(0) - sd).abs() < 4 * sd * math.sqrt(0.5 / n_eff)).all()


def test_failed_chains_run_once_more_with_twice_the_warmup(monkeypatch):
    from types import SimpleNamespace

    from flowinfer.inference import nuts_stage

    calls, built = [], []
    plan = SimpleNamespace(kernel="dense", reason="dense")

    def fake_run(probe, plans, log_density, warmup, thin):
        calls.append((warmup, thin))
        return f"runs{len(calls)}"

    def fake_combine(probe, runs, shares):
        passed = runs == "runs2"
        return (f"draws-{runs}", None, 4), {"checks_passed": passed, "rhat_max": 1.2,
                                            "ess_bulk_min": 50.0, "num_divergences": 0,
                                            "nuts_time": 1.0}

    monkeypatch.setattr(nuts_stage, "_plans", lambda *a: ([plan], [1.0]))
    monkeypatch.setattr(nuts_stage, "_run_plans", fake_run)
    monkeypatch.setattr(nuts_stage, "_combine", fake_combine)
    monkeypatch.setattr(nuts_stage, "build_inference_data",
                        lambda model, args, kwargs, posterior, *a, **k: built.append(
                            posterior) or "idata")
    probe = SimpleNamespace(opts=SimpleNamespace(warmup=150, posterior_predictive=False),
                            guide=SimpleNamespace(_potential=lambda a, k: None),
                            args=(), kwargs={}, model=None, constrained=lambda u: u)
    idata, info = nuts_stage.nuts_result(probe, [], None)
    assert calls == [(150, 1), (300, 2)]
    # The InferenceData is built once, from the second round's draws.
    assert idata == "idata" and built == ["draws-runs2"]
    assert info["nuts_rounds"] == 2 and info["nuts_time"] == 2.0
    assert "R-hat 1.200" in info["kernel_reason"] and info["kernel"] == "dense"


def test_thinned_chains_keep_the_requested_draws():
    from flowinfer.inference.escalation import affine_map, run_chains

    def log_density(u):
        return -0.5 * (u**2).sum(-1)

    d = 2
    run = run_chains(log_density, affine_map(torch.zeros(d), torch.eye(d)),
                     inits=torch.zeros(2, d), num_draws=30, warmup=20, progress=False,
                     thin=3)
    assert run.unconstrained.shape == (60, d) and run.diverging.shape == (60,)
