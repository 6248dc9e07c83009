"""The bounded latents' location features of the regressed members (flowinfer.npe.bounded)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import biject_to, constraints

import flowinfer as fi
from flowinfer.npe.bounded import BoundedSite, SupportLocation, bounded_sites
from flowinfer.npe.regressed import RegressedFlow
from flowinfer.npe.sites import inspect_model

SMALL = {"num_layers": 2, "hidden": (16,)}


def _many_supports():
    pyro.sample("box", dist.Uniform(-torch.ones(2), 3.0).to_event(1))
    pyro.sample("loc", dist.Normal(0.0, 1.0))
    pyro.sample("weights", dist.Dirichlet(torch.ones(3)))
    pyro.sample("scale", dist.HalfNormal(1.0))
    pyro.sample("x", dist.Normal(torch.zeros(2), 1.0).to_event(1))


def test_bounded_sites_are_the_elementwise_bounded_latents():
    info = inspect_model(_many_supports, "x")
    sites = bounded_sites(info)
    # The real line gives nothing new; the simplex's bijection is not elementwise (3 values
    # from 2 unconstrained ones), so it is left out and only shifts the later columns.
    assert [(s.name, s.start, s.size) for s in sites] == [("box", 0, 2), ("scale", 5, 1)]


def _box_location(theta: torch.Tensor, x: torch.Tensor) -> tuple[SupportLocation, ...]:
    box = constraints.interval(-1.0, 1.0)
    u = biject_to(box).inv(theta)
    site = BoundedSite("theta", 0, torch.Size([1]), biject_to(box))
    return SupportLocation.fit([site], theta, x, u.mean(0), u.std(0)), u


def _box_pairs(seed: int, n: int, noise: float) -> tuple[SupportLocation, ...]:
    """A fitted location, data and z-scored logits of n uniform draws on (-1, 1) observed
    with Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    theta = 2 * torch.rand(n, 1, generator=g) - 1
    x = theta + noise * torch.randn(n, 1, generator=g)
    location, u = _box_location(theta, x)
    return location, x, (u - u.mean(0)) / u.std(0)


def test_location_is_the_bijection_of_the_clipped_constrained_prediction():
    g = torch.Generator().manual_seed(0)
    theta = 2 * torch.rand(4000, 1, generator=g) - 1
    location, u = _box_location(theta, theta.clone())  # data that fix the latent exactly
    expected = (u - u.mean(0)) / u.std(0)
    inside = theta[:, 0].abs() < 0.99  # at the very edge single precision limits the match
    assert torch.allclose(location(theta)[inside], expected[inside], atol=1e-3)
    assert torch.allclose(location(theta), expected, atol=1e-2)
    # Data beyond the box: the prediction is clipped to the simulated range, so finite.
    far = location(torch.tensor([[5.0], [-5.0]]))
    assert torch.isfinite(far).all()
    ends = torch.stack([theta[:, 0].argmax(), theta[:, 0].argmin()])
    assert torch.allclose(far, expected[ends], atol=1e-2)


def test_location_features_leave_a_much_smaller_residual_near_the_bounds():
    # theta ~ U(-1, 1) read through the logit: z = logit((theta + 1) / 2) is logistic, and
    # its best linear prediction from theta leaves sqrt(1 - 0.955^2) = 0.30 of z's sd
    # (cov(logit u, u) = 1/2, sd u = 0.289, sd z = pi / sqrt 3), more after the tail limit
    # (the largest residuals are at the bounds). With the location feature the residual is
    # the data noise (sd 0.001) times the logit's slope: under a tenth of that.
    location, x, z = _box_pairs(1, 5000, noise=0.001)
    inner = fi.build_flow("nsf", dim=1, context_dim=2, num_layers=1, hidden=(8,))
    plain, located = RegressedFlow(inner, 1), RegressedFlow(inner, 1)
    plain.fit_head(z, x)
    located.fit_head(z, x, location)
    assert 0.28 < float(plain.head.scale) < 0.6
    assert float(located.head.scale) < 0.1 * float(plain.head.scale)


def _bounded_model():
    theta = pyro.sample("theta", dist.Uniform(-torch.ones(2), 1.0).to_event(1))
    sd = pyro.sample("sd", dist.LogNormal(-1.0, 0.3))
    pyro.sample("x", dist.Normal(theta, sd.unsqueeze(-1)).to_event(1))


@pytest.mark.parametrize("combine", ["mixture", "best"])
def test_bounded_mixed_npe_round_trips_its_location_features(combine, tmp_path):
    torch.manual_seed(0)
    npe = fi.NPE(_bounded_model, "x", combine=combine, embedding="mlp", replicates=2,
                 standardize="mixed", flow_options=SMALL)
    if combine == "best":  # the regressed copy alone, so it is saved as the estimator
        npe._candidates = npe._candidates[1:]
        npe._use(npe._candidates[0])
    npe.fit(num_simulations=400, epochs=2, seed=0, progress=False)
    regressed = [f for f in getattr(npe.flow, "flows", [npe.flow])
                 if isinstance(f, RegressedFlow)]
    assert regressed and all(f.location is not None for f in regressed)
    # Two box coordinates and the positive sd; the head reads them beside the 2 data values,
    # and the inner flow beside the embedding.
    assert all(f.head.coef.shape == (2 + 3, 3) for f in regressed)
    assert all(f.located == 3 and f.inner.context_dim == f.context_dim - 2 + 3
               for f in regressed)
    path = tmp_path / "npe.pt"
    fi.save(npe, path)
    back = fi.load(path, model=_bounded_model)
    x = torch.tensor([[0.97, -0.2], [0.0, 0.5]])
    theta = npe.sample(5, x=x[0])
    assert torch.allclose(back.log_prob(theta, x=x[0]), npe.log_prob(theta, x=x[0]),
                          atol=1e-5)
    # Sequential rounds restart the saved members and fit their location features afresh.
    back.fit(num_simulations=200, rounds=2, observation=x[0], epochs=1, seed=1,
             progress=False)
    again = [f for f in getattr(back.flow, "flows", [back.flow])
             if isinstance(f, RegressedFlow)]
    assert again and all(f.location is not None for f in again)
    assert torch.isfinite(back.log_prob(theta, x=x[0])).all()
    # Another model whose bounded coordinates differ cannot take the saved features.

    def other():
        theta = pyro.sample("theta", dist.Uniform(-torch.ones(2), 1.0).to_event(1))
        sd = pyro.sample("sd", dist.Normal(0.3, 0.1))
        pyro.sample("x", dist.Normal(theta, sd.abs().unsqueeze(-1)).to_event(1))

    with pytest.raises(ValueError, match="bounded latent"):
        fi.load(path, model=other)


def test_the_inner_flow_reads_the_fitted_location_beside_the_embedding():
    location, x, z = _box_pairs(2, 2000, noise=0.05)
    g = torch.Generator().manual_seed(3)
    inner = fi.build_flow("nsf", dim=1, context_dim=3 + 1, num_layers=1, hidden=(8,))
    with torch.no_grad():  # a trained-like flow: a fresh one starts as the identity
        for p in inner.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    flow = RegressedFlow(inner, num_features=1, located=1)
    assert flow.context_dim == 3 + 1  # embedding and regression features, as before
    context = torch.cat([torch.randn(5, 3, generator=g), x[:5]], -1)
    unfitted = flow.log_prob(z[:5], context)  # zeros stand in for the location
    flow.fit_head(z, x, location)
    embedded, predicted = flow._split(context)
    assert torch.equal(embedded[:, :3], context[:, :3])
    assert torch.allclose(embedded[:, 3:], location(x[:5]))
    assert torch.equal(predicted, flow.prediction(x[:5]))
    # The inner flow's conditioner gets the location: its density moves with it.
    inner_only = inner.log_prob((z[:5] - predicted) / flow.head.scale,
                                embedded) + flow.head.log_abs_det()
    assert torch.allclose(flow.log_prob(z[:5], context), inner_only)
    assert not torch.allclose(inner.log_prob(z[:5], embedded),
                              inner.log_prob(z[:5], torch.cat([embedded[:, :3],
                                                               torch.zeros(5, 1)], -1)))
    assert torch.isfinite(unfitted).all()
    with pytest.raises(ValueError, match="located must be"):
        RegressedFlow(inner, num_features=1, located=5)
    two = RegressedFlow(fi.build_flow("nsf", dim=1, context_dim=5, num_layers=1,
                                      hidden=(8,)), num_features=1, located=2)
    with pytest.raises(ValueError, match="reads 2 location features"):
        two.fit_head(z, x, location)
