"""data_space="unconstrained": bounded data read through biject_to(support).inv."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import flowinfer as fi

SMALL = {"flow_options": {"num_layers": 1, "hidden": (8,)}, "embedding": "mlp"}


def positive_model():
    theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
    pyro.sample("x", dist.LogNormal(theta, 0.5).expand([3]).to_event(1))


def mixed_model():
    a = pyro.sample("a", dist.Uniform(1.0, 2.0))
    pyro.sample("proportion", dist.Beta(2.0, a))
    pyro.sample("bounded_by_latent", dist.Uniform(0.0, a))
    pyro.sample("real", dist.Normal(a, 1.0))
    pyro.sample("count", dist.Binomial(10, 0.5))
    pyro.sample("simplex", dist.Dirichlet(torch.ones(3)))


def test_which_sites_are_mapped():
    npe = fi.NPE(mixed_model, ["proportion", "bounded_by_latent", "real", "count", "simplex"])
    # Fixed bounds only; a Uniform(0, a) with a latent a changes its bound with each draw.
    assert set(npe.info.data_transforms) == {"proportion"}
    x = {"proportion": torch.tensor([[0.25]]).squeeze(-1), "bounded_by_latent": torch.ones(1),
         "real": torch.ones(1), "count": torch.ones(1), "simplex": torch.ones(1, 3) / 3}
    packed = npe._pack_x(x)
    assert packed[0, 0].item() == pytest.approx(math.log(0.25 / 0.75), abs=1e-6)
    assert torch.equal(packed[0, 1:4], torch.ones(3))
    raw = fi.NPE(mixed_model, ["proportion", "real"], latents="a", data_space="raw")
    assert raw._pack_x({"proportion": torch.tensor([0.25]), "real": torch.ones(1)})[0, 0] == 0.25


def test_positive_data_read_on_the_log_scale():
    npe = fi.NPE(positive_model, "x")
    x = torch.tensor([[1.0, math.e, 100.0]])
    assert torch.allclose(npe._pack_x({"x": x}), x.log())


def test_observation_on_the_bound_raises_before_simulating():
    npe = fi.NPE(positive_model, "x", **SMALL)
    with pytest.raises(ValueError, match=r"observation of site 'x' has values on or outside"):
        npe.fit(20, rounds=2, observation=torch.tensor([1.0, 0.0, 2.0]), progress=False)
    assert npe.simulations is None
    npe.fit(200, epochs=2, seed=0, progress=False)
    with pytest.raises(ValueError, match="data_space='raw'"):
        npe.sample(5, x=torch.tensor([1.0, -1.0, 2.0]))


def test_simulations_on_the_bound_are_dropped_and_counted():
    sims = fi.simulate(positive_model, "x", 100, seed=0, progress=False)
    sims.observed["x"][:3, 0] = 0.0
    npe = fi.NPE(positive_model, "x", **SMALL)
    with pytest.warns(UserWarning, match="3 of 100 simulations have data on the bound"):
        npe.fit(simulations=sims, epochs=1, seed=0, progress=False)
    raw = fi.NPE(positive_model, "x", data_space="raw", **SMALL)
    raw.fit(simulations=sims, epochs=1, seed=0, progress=False)
    assert torch.isfinite(raw.log_prob({"theta": torch.zeros(2)}, x=torch.ones(3))).all()


def test_data_space_survives_save_and_load(tmp_path):
    for space in ("unconstrained", "raw"):
        npe = fi.NPE(positive_model, "x", data_space=space, **SMALL)
        npe.fit(200, epochs=2, seed=0, progress=False)
        fi.save(npe, tmp_path / f"{space}.pt")
        back = fi.load(tmp_path / f"{space}.pt", model=positive_model)
        assert back.data_space == space
        x, theta = torch.tensor([0.5, 1.0, 2.0]), {"theta": torch.linspace(-1, 1, 4)}
        assert torch.allclose(back.log_prob(theta, x=x), npe.log_prob(theta, x=x), atol=1e-5)


def test_unknown_data_space():
    with pytest.raises(ValueError, match="data_space"):
        fi.NPE(positive_model, "x", data_space="log")
