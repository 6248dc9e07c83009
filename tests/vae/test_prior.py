"""FlowPrior: shapes inside plates, training through SVI, and input checks."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import flowinfer as fi
from flowinfer.vae.prior import FlowPrior


def perturbed_prior(dim=3, seed=0, flow="realnvp"):
    """A prior moved away from the identity (at the identity, density checks are trivial)."""
    torch.manual_seed(seed)
    prior = FlowPrior(dim, flow=flow, num_layers=2, hidden=(8,))
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return prior


def test_lazy_export():
    assert fi.FlowPrior is FlowPrior


@pytest.mark.parametrize("dim, flow", [(1, "maf"), (3, "realnvp")])
def test_event_shape_and_plate_broadcasting(dim, flow):
    prior = perturbed_prior(dim, flow=flow)
    assert prior().event_shape == (dim,)
    assert prior().batch_shape == ()

    def model():
        with pyro.plate("outer", 2, dim=-2), pyro.plate("data", 5):
            return pyro.sample("z", prior())

    trace = poutine.trace(model).get_trace()
    trace.compute_log_prob()
    z = trace.nodes["z"]["value"]
    assert z.shape == (2, 5, dim)
    log_prob = trace.nodes["z"]["log_prob"]
    assert log_prob.shape == (2, 5)
    # Each row is scored by the flow density, not a sum over the plate.
    torch.testing.assert_close(log_prob, prior.log_prob(z))


def test_expand_to_event_zero_inside_plate():
    prior = perturbed_prior()
    z_obs = torch.randn(4, 3)

    def model():
        with pyro.plate("data", 4):
            pyro.sample("z", prior().expand([4]).to_event(0), obs=z_obs)

    trace = poutine.trace(model).get_trace()
    trace.compute_log_prob()
    site = trace.nodes["z"]
    assert site["fn"].batch_shape == (4,) and site["fn"].event_shape == (3,)
    torch.testing.assert_close(site["log_prob"], prior.log_prob(z_obs))


def test_density_integrates_to_one_1d():
    # Trapezoid rule on a wide grid; the mass outside [-12, 12] of this mildly perturbed
    # flow is far below the 1e-3 tolerance (its scales are within exp(+-1) of the base).
    prior = perturbed_prior(dim=1, flow="maf")
    grid = torch.linspace(-12, 12, 20001, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad():
        density = prior.double().log_prob(grid).exp()
    mass = torch.trapezoid(density, grid.squeeze(-1))
    assert abs(mass.item() - 1.0) < 1e-3


def test_sample_and_log_prob_shapes_follow_dtype():
    prior = perturbed_prior().double()
    z = prior.sample((7,))
    assert z.shape == (7, 3) and z.dtype == torch.float64
    assert prior.log_prob(z).shape == (7,)


def _latent_model(prior, data, register):
    def model():
        if register:
            pyro.module("prior", prior)
        with pyro.plate("data", data.shape[0]):
            z = pyro.sample("z", prior())
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=data)

    def guide():
        loc = pyro.param("q_loc", data.clone())
        with pyro.plate("data", data.shape[0]):
            pyro.sample("z", dist.Normal(loc, 0.3).to_event(1))

    return model, guide


@pytest.mark.parametrize("register", [True, False])
def test_parameters_train_only_when_registered_in_the_model(register):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    prior = FlowPrior(2, flow="realnvp", num_layers=2, hidden=(8,))
    data = torch.randn(32, 2) + 3.0
    model, guide = _latent_model(prior, data, register)
    before = {n: p.detach().clone() for n, p in prior.named_parameters()}

    if register:
        loss = pyro.infer.Trace_ELBO().differentiable_loss(model, guide)
        loss.backward()
        # Every parameter is in the graph of the ELBO; at the identity start only the
        # zero-initialised output layers get a non-zero gradient, and they must get one.
        grads = [p.grad for p in prior.parameters()]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0
        prior.zero_grad()

    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    for _ in range(20):
        svi.step()
    changed = {n: not torch.equal(p, before[n]) for n, p in prior.named_parameters()}
    if register:
        assert all(changed.values()), changed
    else:
        assert not any(changed.values()), "an unregistered prior must not be trained"


@pytest.mark.slow
def test_svi_trained_prior_beats_the_best_gaussian():
    # Maximum likelihood through SVI (the prior observed directly): on a well separated
    # two-component mixture the flow must beat the Gaussian MLE on held-out points by more
    # than 4 standard errors of the paired per-point difference.
    pyro.clear_param_store()
    torch.manual_seed(0)
    pyro.set_rng_seed(0)

    def mixture(n):
        sign = torch.randint(0, 2, (n, 1)) * 2.0 - 1.0
        return torch.cat([2.0 * sign, torch.zeros(n, 1)], -1) + 0.4 * torch.randn(n, 2)

    train, test = mixture(1000), mixture(1000)
    prior = FlowPrior(2, flow="realnvp", num_layers=4, hidden=(32, 32))

    def model(x):
        pyro.module("prior", prior)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", prior(), obs=x)

    svi = pyro.infer.SVI(model, lambda x: None, pyro.optim.Adam({"lr": 5e-3}),
                         pyro.infer.Trace_ELBO())
    for _ in range(400):
        svi.step(train)
    gaussian = dist.MultivariateNormal(train.mean(0), torch.cov(train.T))
    with torch.no_grad():
        diff = prior.log_prob(test) - gaussian.log_prob(test)
    se = diff.std() / math.sqrt(len(diff))
    assert diff.mean() > 4 * se, (diff.mean().item(), se.item())


# ------------------------------------------------------------------ input checks
@pytest.mark.parametrize(("args", "kwargs", "error", "match"), [
    ((0,), {}, ValueError, "dim must be an integer >= 1, got 0"),
    ((2.0,), {}, TypeError, "dim must be an integer >= 1, got float"),
    ((True,), {}, TypeError, "dim must be an integer"),
    ((2,), {"flow": 42}, TypeError, "flow must be a registered flow name or a flowinfer Flow"),
    ((2,), {"flow": "planar"}, ValueError, "flow 'planar' has no inverse"),
    ((2,), {"flow": "not-a-flow"}, ValueError, "unknown flow 'not-a-flow'"),
])
def test_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        FlowPrior(*args, **kwargs)


def test_the_flow_itself_says_whether_it_has_an_inverse():
    # A ready-built Flow without a registry name: its layers answer, not the registry.
    layers = fi.build_flow("planar", 2, num_layers=2).layers
    with pytest.raises(ValueError, match="the given flow has no inverse"):
        FlowPrior(2, flow=fi.Flow(list(layers), dim=2))
    with pytest.raises(ValueError, match="flow 'planar' has no inverse"):
        FlowPrior(2, flow=fi.build_flow("planar", 2, num_layers=1))


def test_ready_flow_checks():
    with pytest.raises(ValueError, match="flow.dim must equal dim=3, got flow.dim=2"):
        FlowPrior(3, flow=fi.build_flow("realnvp", 2, num_layers=1))
    with pytest.raises(ValueError, match="unconditional"):
        FlowPrior(2, flow=fi.build_flow("realnvp", 2, context_dim=3, num_layers=1))
    with pytest.raises(ValueError, match="hyper-parameters"):
        FlowPrior(2, flow=fi.build_flow("realnvp", 2, num_layers=1), num_layers=2)
    with pytest.raises(ValueError, match="base='learnable'"):
        FlowPrior(2, flow=fi.build_flow("realnvp", 2, num_layers=1), base="learnable")
    prior = FlowPrior(2, flow=fi.build_flow("maf", 2, num_layers=1))
    assert prior().event_shape == (2,)


def test_bad_points():
    prior = FlowPrior(2, num_layers=1, hidden=(8,))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        prior.log_prob([[0.0, 0.0]])
    with pytest.raises(ValueError, match=r"must have shape \(\.\.\., 2\)"):
        prior.log_prob(torch.zeros(3, 3))
