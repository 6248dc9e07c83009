"""Tests for flowinfer.inference.autoflow and .amortized_guide: AutoFlow, AutoAmortizedFlow."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints
from pyro.infer import (
    SVI,
    JitTrace_ELBO,
    Predictive,
    RenyiELBO,
    Trace_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from pyro.infer.autoguide import AutoNormal, init_to_value

import flowinfer as fi
from flowinfer.inference.amortized_guide import AutoAmortizedFlow
from flowinfer.inference.autoflow import AutoFlow
from flowinfer.inference.sites import init_to_median_or_zero

SMALL = {"num_layers": 2, "hidden": (16,)}

# Each test starts from an empty param store and seed 0 (fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("fresh_pyro")


X_OBS = torch.tensor([0.5, -1.0, 2.0])


def gaussian_model(x=X_OBS):
    # z ~ N(0, I), s ~ LogNormal(0, 1), x | z ~ N(z.sum(), 1): a constrained site too.
    z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
    s = pyro.sample("s", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(z.sum() + 0 * s, 1.0), obs=x)


def _train(model, guide, elbo, steps, *args, lr=1e-2):
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), elbo)
    return [svi.step(*args) for _ in range(steps)]


# ----------------------------------------------------------------------------- start point
@pytest.mark.parametrize("flow", ["iaf", "nsf", "realnvp"])
def test_fresh_guide_is_autonormal_start(flow):
    init = init_to_value(values={"z": torch.tensor([0.3, -0.2]), "s": torch.tensor(2.0)})
    guide = AutoFlow(gaussian_model, flow=flow, init_loc_fn=init, init_scale=0.1,
                     warm_start=None, **SMALL)
    guide()
    normal = AutoNormal(gaussian_model, init_loc_fn=init, init_scale=0.1)
    normal()
    expected_loc = torch.cat([normal.locs.z.detach(), normal.locs.s.detach().reshape(1)])
    assert torch.allclose(guide.loc.detach(), expected_loc)
    # Identity flow: the guide's density is the diagonal Gaussian N(loc, 0.1^2 I).
    posterior = guide.get_posterior()
    u = posterior.sample((200,))
    gaussian = dist.Normal(expected_loc, 0.1).to_event(1)
    assert torch.allclose(posterior.log_prob(u), gaussian.log_prob(u), atol=1e-4)


# ----------------------------------------------------------------------------- ELBOs
ELBOS = {
    "Trace_ELBO": lambda: Trace_ELBO(),
    "TraceGraph_ELBO": lambda: TraceGraph_ELBO(),
    "RenyiELBO": lambda: RenyiELBO(alpha=0.5, num_particles=2),
    "TraceMeanField_ELBO": lambda: TraceMeanField_ELBO(),
    "vectorized": lambda: Trace_ELBO(num_particles=8, vectorize_particles=True),
    "JitTrace_ELBO": lambda: JitTrace_ELBO(ignore_jit_warnings=True),
}


@pytest.mark.parametrize("elbo", list(ELBOS))
def test_each_elbo_trains(elbo):
    guide = AutoFlow(gaussian_model, **SMALL)
    losses = _train(gaussian_model, guide, ELBOS[elbo](), 30)
    assert all(math.isfinite(v) for v in losses)
    # The flow's parameters are in Pyro's param store, and the optimizer moved them off
    # the identity start (whose autoregressive output layers are zero).
    store = dict(pyro.get_param_store().named_parameters())
    assert "AutoFlow.loc" in store and "AutoFlow.scale" in store
    flow_out = [p for n, p in store.items() if "flow" in n and "output_layer" in n]
    assert flow_out and any(float(p.abs().sum()) > 0 for p in flow_out)


def test_training_improves_the_elbo():
    # Mean of the first and last 50 ELBO estimates: the difference is many standard errors.
    # From the AutoNormal start: a Laplace start is already this posterior's exact answer.
    guide = AutoFlow(gaussian_model, warm_start=None, **SMALL)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True)
    losses = torch.tensor(_train(gaussian_model, guide, elbo, 200))
    first, last = losses[:50], losses[-50:]
    se = math.sqrt(first.var() / 50 + last.var() / 50)
    assert last.mean() < first.mean() - 4 * se


def test_plate_subsampling():
    data = torch.randn(100) + 3.0

    def model(data):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with pyro.plate("data", data.shape[0], subsample_size=10) as idx:
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=data[idx])

    guide = AutoFlow(model, **SMALL)
    losses = _train(model, guide, Trace_ELBO(), 150, data, lr=5e-2)
    assert all(math.isfinite(v) for v in losses)
    # Posterior mean is the data mean (prior is vague) with sd 0.1; the guide's median
    # (Monte Carlo from 4000 draws) must be within a loose 5 sd of it after noisy SVI.
    assert abs(float(guide.median(data)["mu"]) - float(data.mean())) < 0.5


# ----------------------------------------------------------------------------- model errors
def test_discrete_site_error_suggests_enumeration():
    def model():
        c = pyro.sample("c", dist.Bernoulli(0.5))
        pyro.sample("x", dist.Normal(c, 1.0), obs=torch.tensor(0.3))

    with pytest.raises(ValueError, match="config_enumerate.*AutoGuideList|AutoGuideList"):
        AutoFlow(model, **SMALL)()


def flat_model():
    beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)))
    sigma = pyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
    pyro.sample("y", dist.Normal(beta.sum(-1), sigma), obs=torch.tensor(1.0))


def test_improper_uniform_clear_error():
    with pytest.raises(ValueError, match="cannot be sampled.*beta.*init_to_median_or_zero"):
        AutoFlow(flat_model, **SMALL)()


def test_improper_uniform_with_non_sampling_init():
    guide = AutoFlow(flat_model, init_loc_fn=init_to_median_or_zero, **SMALL)
    losses = _train(flat_model, guide, Trace_ELBO(), 5)
    assert all(math.isfinite(v) for v in losses)
    # Flat sites start at unconstrained zero: beta = 0, sigma = exp(0) = 1.
    site = {"fn": dist.ImproperUniform(constraints.positive, (), ())}
    assert torch.allclose(init_to_median_or_zero(site), torch.tensor(1.0))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"flow": 3}, TypeError, "flow must be"),
        ({"flow": "no-such-flow"}, ValueError, "unknown flow"),
        ({"init_scale": -1.0}, ValueError, "init_scale"),
        ({"init_scale": "big"}, TypeError, "init_scale"),
        ({"scale": "lowrank"}, ValueError, "scale must be one of"),
        ({"init_loc_fn": 1.0}, TypeError, "init_loc_fn"),
    ],
)
def test_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        AutoFlow(gaussian_model, **kwargs)


def test_model_must_be_callable():
    with pytest.raises(TypeError, match="model must be"):
        AutoFlow("not a model")


def test_quantiles_errors():
    guide = AutoFlow(gaussian_model, **SMALL)
    guide()
    with pytest.raises(ValueError, match="quantiles"):
        guide.quantiles([0.5, 1.5])


# ----------------------------------------------------------------------------- API pieces
def test_predictive_and_quantiles_shapes():
    guide = AutoFlow(gaussian_model, scale="full", **SMALL)
    _train(gaussian_model, guide, Trace_ELBO(), 5)
    draws = Predictive(gaussian_model, guide=guide, num_samples=7)()
    normal = AutoNormal(gaussian_model)
    normal()
    expected = Predictive(gaussian_model, guide=normal, num_samples=7)()
    assert {k: v.shape for k, v in draws.items()} == {k: v.shape for k, v in expected.items()}
    assert draws["z"].shape[0] == 7 and draws["z"].shape[-1] == 2
    assert bool((draws["s"] > 0).all())
    q = guide.quantiles([0.1, 0.5, 0.9])
    assert q["z"].shape == (3, 2) and bool((q["z"][0] < q["z"][2]).all())
    assert guide.median()["s"].shape == ()


def test_state_dict_round_trip():
    guide = AutoFlow(gaussian_model, **SMALL)
    _train(gaussian_model, guide, Trace_ELBO(), 20)
    state = guide.state_dict()
    pyro.clear_param_store()
    fresh = AutoFlow(gaussian_model, **SMALL)
    fresh()  # builds the parameters, so load_state_dict finds them
    fresh.load_state_dict(state)
    u = torch.randn(10, guide.latent_dim)
    t_old, t_new = guide.get_transform(), fresh.get_transform()
    assert torch.allclose(t_old(u), t_new(u))


def test_bnaf_guide_without_inverse():
    guide = AutoFlow(gaussian_model, flow="bnaf")
    losses = _train(gaussian_model, guide, Trace_ELBO(), 10)
    assert all(math.isfinite(v) for v in losses)


def test_callable_flow_and_float64():
    def make(dim):
        return fi.build_flow("realnvp", dim, num_layers=1, hidden=(8,))

    def model64():
        pyro.sample("z", dist.Normal(torch.zeros(3, dtype=torch.float64), 1.0).to_event(1))

    guide = AutoFlow(model64, flow=make)
    assert guide()["z"].dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in guide.flow.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    def model():
        pyro.sample("z", dist.Normal(torch.zeros(2, device="cuda"), 1.0).to_event(1))

    guide = AutoFlow(model, **SMALL)
    losses = _train(model, guide, Trace_ELBO(), 3)
    assert all(math.isfinite(v) for v in losses)
    assert guide()["z"].device.type == "cuda"


# ----------------------------------------------------------------------------- amortized
def local_model(x):
    # z_i ~ N(0, 1), x_i | z_i ~ N(z_i, 0.5^2): exact posterior N(0.8 x_i, 0.2).
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)


def test_amortized_flow_learns_conditional_posterior():
    torch.manual_seed(0)
    x = torch.randn(256, 1) * math.sqrt(1.25)  # marginal of x is N(0, 1.25)
    encoder = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.Tanh())
    guide = AutoAmortizedFlow(local_model, encoder, context_dim=8, **SMALL)
    _train(local_model, guide, Trace_ELBO(), 400, x, lr=2e-2)
    probe = torch.tensor([[-1.0], [0.0], [1.0]])
    with torch.no_grad():
        draws = torch.stack([guide(probe)["z"] for _ in range(400)])  # (400, 3, 1)
    # 400 draws: the Monte Carlo sd of the mean is sqrt(0.2 / 400) ~ 0.022; allow for
    # the fit's own error with 0.15 (a few times the fitting noise seen at this budget).
    assert torch.allclose(draws.mean(0).squeeze(-1), 0.8 * probe.squeeze(-1), atol=0.15)
    assert torch.allclose(draws.var(0).squeeze(-1), torch.full((3,), 0.2), atol=0.08)


def test_amortized_subsampling_with_full_data_context():
    x = torch.randn(50, 1)

    def model(x):
        with pyro.plate("data", x.shape[0], subsample_size=10) as idx:
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x[idx])

    guide = AutoAmortizedFlow(model, torch.nn.Linear(1, 4), context_dim=4, **SMALL)
    losses = _train(model, guide, Trace_ELBO(), 5, x)
    assert all(math.isfinite(v) for v in losses)
    assert guide(x)["z"].shape == (10, 1)


def test_amortized_errors():
    enc = torch.nn.Linear(1, 4)
    with pytest.raises(TypeError, match="encoder"):
        AutoAmortizedFlow(local_model, "enc", context_dim=4)
    with pytest.raises(ValueError, match="context_dim"):
        AutoAmortizedFlow(local_model, enc, context_dim=0)
    with pytest.raises(ValueError, match="does not support context"):
        AutoAmortizedFlow(local_model, enc, context_dim=4, flow="bnaf")
    with pytest.raises(ValueError, match="context_dim=3"):
        AutoAmortizedFlow(local_model, enc, context_dim=3, **SMALL)(torch.randn(5, 1))

    def global_model(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0).expand([x.shape[0], 1]).to_event(1), obs=x)

    with pytest.raises(ValueError, match="AutoGuideList"):
        AutoAmortizedFlow(global_model, enc, context_dim=4, **SMALL)(torch.randn(5, 1))
