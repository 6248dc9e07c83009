"""Every bad input of NPE raises a clear error before any simulation runs."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from npe_models import gaussian_model

import flowinfer as fi
from flowinfer.npe.simulate import SimulationError, simulate

CALLS = {"n": 0}


def counted_model():
    CALLS["n"] += 1
    theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
    pyro.sample("x", dist.Normal(theta, 1.0).expand([3]).to_event(1))


@pytest.fixture
def counter():
    CALLS["n"] = 0
    return CALLS


def test_model_without_latent_site(counter):
    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="no latent sample site"):
        fi.NPE(model, observed="x")


def test_observed_name_not_a_site(counter):
    with pytest.raises(ValueError, match="'y' is not a sample site.*\\['theta', 'x'\\]"):
        fi.NPE(counted_model, observed="y")
    assert counter["n"] == 1  # the one plain run that finds the sites


def test_observed_wrong_type():
    with pytest.raises(TypeError, match="observed must be a site name"):
        fi.NPE(counted_model, observed=3)
    with pytest.raises(TypeError, match="model must be a callable"):
        fi.NPE("model", observed="x")


def test_discrete_latent():
    def model():
        k = pyro.sample("k", dist.Poisson(3.0))
        pyro.sample("x", dist.Normal(k, 1.0))

    with pytest.raises(ValueError, match="continuous latent sites only.*\\['k'\\]"):
        fi.NPE(model, observed="x")


def test_site_the_model_observes_itself():
    def model():
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(theta, 1.0), obs=torch.tensor(0.0))

    with pytest.raises(ValueError, match="already observed inside the model"):
        fi.NPE(model, observed="x")


def _conditioned_model(factor: bool = False, data: bool = False):
    theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
    pyro.deterministic("twice", 2 * theta)  # deterministic sites are fine
    if factor:
        pyro.factor("penalty", -theta**2)
    if data:
        pyro.sample("y", dist.Normal(theta, 1.0), obs=torch.tensor(0.3))
    pyro.sample("x", dist.Normal(theta, 1.0))


@pytest.mark.parametrize("kwargs, match", [
    ({"factor": True}, r"pyro.factor site\(s\) \['penalty'\]"),
    ({"data": True}, r"observes site\(s\) \['y'\] itself"),
])
def test_data_or_factors_the_simulations_would_ignore(kwargs, match):
    assert fi.NPE(_conditioned_model, "x").info.latent_names == ["theta"]
    with pytest.raises(ValueError, match=match):
        fi.NPE(_conditioned_model, "x", model_kwargs=kwargs)


@pytest.mark.parametrize("budget, error", [(0, ValueError), (-5, ValueError),
                                           (1.5, TypeError), ("10", TypeError),
                                           (True, TypeError)])
def test_budget_not_a_positive_integer(counter, budget, error):
    npe = fi.NPE(counted_model, observed="x")
    before = counter["n"]
    with pytest.raises(error, match="num_simulations"):
        npe.fit(num_simulations=budget)
    assert counter["n"] == before


@pytest.mark.parametrize("option, value, error", [
    ("lr", 0.0, ValueError), ("patience", 0, ValueError), ("val_fraction", 1.0, ValueError),
    ("weight_decay", -0.1, ValueError), ("epochs", 2.5, TypeError),
])
def test_training_options_are_checked_before_simulating(counter, option, value, error):
    npe = fi.NPE(counted_model, observed="x")
    before = counter["n"]
    with pytest.raises(error, match=option):
        npe.fit(num_simulations=100, **{option: value})
    assert counter["n"] == before


def test_no_budget_and_no_simulations():
    npe = fi.NPE(counted_model, observed="x")
    with pytest.raises(ValueError, match="num_simulations"):
        npe.fit()


def test_observation_of_wrong_shape_names_site_and_shapes(counter):
    npe = fi.NPE(counted_model, observed="x")
    before = counter["n"]
    with pytest.raises(ValueError, match=r"site 'x' has shape \(4,\).*site 'x' has shape \(3,\)"):
        npe.fit(num_simulations=100, rounds=2, observation=torch.zeros(4))
    assert counter["n"] == before
    with pytest.raises(ValueError, match="needs observation"):
        npe.fit(num_simulations=100, rounds=2)


def test_sequential_method_is_checked_before_simulating(counter):
    npe = fi.NPE(counted_model, observed="x")
    before = counter["n"]
    with pytest.raises(ValueError, match=r"sequential must be one of .*got 'apt'"):
        npe.fit(num_simulations=100, rounds=2, observation=torch.zeros(3), sequential="apt")
    with pytest.raises(ValueError, match=r"sequential='atomic' is used by sequential rounds"):
        npe.fit(num_simulations=100, sequential="atomic")
    assert counter["n"] == before


def test_sample_before_fit_and_wrong_observation_shape():
    npe = fi.NPE(gaussian_model, observed="x", flow_options={"num_layers": 1, "hidden": (8,)})
    with pytest.raises(RuntimeError, match="not trained yet"):
        npe.sample(10, x=torch.zeros(4, 2))
    npe.fit(num_simulations=100, epochs=1, seed=0, progress=False)
    with pytest.raises(ValueError, match=r"shape \(2, 4\).*shape \(4, 2\)"):
        npe.sample(10, x=torch.zeros(2, 4))


class _Flat(torch.nn.Module):
    def forward(self, x):
        return x.sum(dim=(-1, -2))  # (batch,): not (batch, k)


class _Broken(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(5, 3)

    def forward(self, x):
        return self.lin(x.reshape(x.shape[0], -1))  # 8 inputs, not 5


@pytest.mark.parametrize("net, match", [(_Flat(), "must map data shaped"),
                                        (_Broken(), "failed on a batch"),
                                        (torch.nn.Identity(), "must map data shaped")])
def test_embedding_output_does_not_fit(counter, net, match):
    with pytest.raises(ValueError, match=match):
        fi.NPE(gaussian_model, observed="x", embedding=net)


def test_embedding_bad_name_and_type():
    with pytest.raises(ValueError, match="embedding must be one of"):
        fi.NPE(gaussian_model, observed="x", embedding="transformer")
    with pytest.raises(TypeError, match="embedding must be a name"):
        fi.NPE(gaussian_model, observed="x", embedding=3)


def test_flow_without_context_or_inverse():
    with pytest.raises(ValueError, match="cannot be an NPE posterior"):
        fi.NPE(gaussian_model, observed="x", flow="planar")
    with pytest.raises(TypeError, match="flow must be a registered flow name, got int"):
        fi.NPE(gaussian_model, observed="x", flow=3)


def test_truncation_options_are_checked():
    from flowinfer.npe.sequential import region_threshold, truncated_prior_draws

    npe = fi.NPE(gaussian_model, observed="x", flow_options={"num_layers": 1, "hidden": (8,)})
    npe.fit(num_simulations=100, epochs=1, seed=0, progress=False)
    x = npe.simulations.observed["x"][0]
    with pytest.raises(ValueError, match="epsilon"):
        region_threshold(npe, x, 1.5)
    with pytest.raises(ValueError, match="mcmc_steps"):
        truncated_prior_draws(npe, x, 10, seed=0, mcmc_steps=-1)


def test_improper_latent():
    def model():
        b = pyro.sample("b", dist.ImproperUniform(dist.constraints.real, (), ()))
        pyro.sample("x", dist.Normal(b, 1.0))

    with pytest.raises(ValueError, match="proper prior"):
        fi.NPE(model, observed="x")


def test_constant_data_column_is_a_clear_error():
    def model():
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        x = torch.stack([theta + 0.1 * torch.randn_like(theta), torch.ones_like(theta)], -1)
        pyro.sample("x", dist.Delta(x).to_event(1))

    npe = fi.NPE(model, observed="x")
    with pytest.raises(ValueError, match=r"column\(s\) \[1\] are constant"):
        npe.fit(num_simulations=50, epochs=1, progress=False, seed=0)
    npe = fi.NPE(model, observed="x", constant_data="keep",
                 flow_options={"num_layers": 1, "hidden": (8,)})
    npe.fit(num_simulations=50, epochs=1, progress=False, seed=0)


def flaky_model():
    theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
    if theta.dim() == 0 and theta > 1.0:
        raise RuntimeError("solver diverged")
    x = torch.where(theta < -1.0, torch.full_like(theta, float("nan")), theta)
    pyro.sample("x", dist.Normal(x, 0.1))


def test_raising_and_nan_draws_are_dropped_and_counted():
    sims = simulate(flaky_model, "x", 400, seed=0)
    assert len(sims) == 400
    assert sims.num_failed > 0 and sims.num_nonfinite > 0
    assert torch.isfinite(sims.observed["x"]).all()
    assert (sims.latents["theta"] <= 1.0).all() and (sims.latents["theta"] >= -1.0).all()
    # About 16% raise and 16% give NaN: the counts follow from where the draws fell.
    total = 400 + sims.num_failed + sims.num_nonfinite
    assert 0.10 < sims.num_failed / total < 0.22
    assert 0.10 < sims.num_nonfinite / total < 0.22
    npe = fi.NPE(flaky_model, observed="x", flow_options={"num_layers": 1, "hidden": (8,)})
    npe.fit(num_simulations=200, epochs=1, progress=False, seed=0)
    assert npe.simulations.num_failed > 0


def test_every_draw_failing_is_an_error():
    def model():
        pyro.sample("theta", dist.Normal(0.0, 1.0))
        raise RuntimeError("always")

    def model_ok_once():
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(theta, float("nan")))

    with pytest.raises(RuntimeError, match="always"):
        fi.NPE(model, observed="x")
    with pytest.raises(SimulationError, match="every simulation failed"):
        simulate(model_ok_once, "x", 20, seed=0)


def _random_bound():
    a = pyro.sample("a", dist.Uniform(1.0, 3.0))
    b = pyro.sample("b", dist.Uniform(0.0, a))
    pyro.sample("x", dist.Normal(torch.stack([a, b], -1), 0.1).to_event(1))


def test_support_that_changes_between_runs(counter):
    with pytest.raises(ValueError, match="'b' has a support that changes from run to run"):
        fi.NPE(_random_bound, "x")


def _positive_model():
    s = pyro.sample("s", dist.Gamma(2.0, 2.0))
    pyro.sample("x", dist.Normal(s, 0.1))


def test_draws_on_the_support_edge_are_dropped_and_draws_outside_refused():
    npe = fi.NPE(_positive_model, "x", flow_options={"num_layers": 1, "hidden": (8,)})
    sims = fi.simulate(_positive_model, "x", 200, seed=0)
    edge = sims.latents["s"].clone()
    edge[:3] = 0.0  # a Gamma draw that underflowed: log(0) is -inf in unconstrained space
    with pytest.warns(UserWarning, match="3 of 200 simulated draws lie on the edge"):
        npe.fit(simulations={"s": edge, "x": sims.observed["x"]}, epochs=1, seed=0,
                progress=False)
    assert torch.isfinite(torch.as_tensor(npe.results[-1].best_loss))
    outside = sims.latents["s"].clone()
    outside[5] = -1.5
    fresh = fi.NPE(_positive_model, "x", flow_options={"num_layers": 1, "hidden": (8,)})
    with pytest.raises(ValueError, match="1 simulated draws of latent site 's' lie outside"):
        fresh.fit(simulations={"s": outside, "x": sims.observed["x"]}, epochs=1,
                  progress=False)
