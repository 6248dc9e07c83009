"""AutoFlow and the diagnostics refuse bad input early, naming the argument."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as pdist
import pytest
import torch

import flowinfer as fi

SMALL = {"num_layers": 1, "hidden": (8,)}


@pytest.fixture
def flow():
    return fi.build_flow("realnvp", dim=2, **SMALL)


def _discrete_model():
    pyro.sample("k", pdist.Bernoulli(0.5))
    pyro.sample("z", pdist.Normal(0.0, 1.0))


def _regression(x):
    z = pyro.sample("z", pdist.Normal(torch.zeros(2), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", pdist.Normal(z.sum(), 1.0), obs=x)


def _svi_step(model, guide, *args):
    pyro.clear_param_store()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    return svi.step(*args)


def test_autoflow_discrete_latents():
    with pytest.raises(ValueError, match=r"continuous latent sites only.*discrete.*\['k'\]"):
        _svi_step(_discrete_model, fi.AutoFlow(_discrete_model))


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"flow": "nope"}, ValueError, "unknown flow 'nope'"),
    ({"flow": 3}, TypeError, "flow must be a registered flow name"),
    ({"init_scale": math.nan}, ValueError, "init_scale must be a finite number > 0"),
    ({"init_scale": -1.0}, ValueError, "init_scale must be a finite number > 0"),
    ({"scale": "tri"}, ValueError, "scale must be one of"),
])
def test_autoflow_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        fi.AutoFlow(_regression, **kwargs)


def test_autoflow_non_callable_model():
    with pytest.raises(TypeError, match="model must be a callable Pyro model, got int"):
        fi.AutoFlow(3)


def test_autoflow_nan_data_and_nan_target_are_refused():
    with pytest.raises(ValueError, match="site 'x'"):
        _svi_step(_regression, fi.AutoFlow(_regression), torch.tensor([math.nan, 1.0]))

    def nan_model():
        z = pyro.sample("z", pdist.Normal(0.0, 1.0))
        pyro.factor("f", torch.tensor(math.nan) * z)

    with pytest.raises(ValueError, match="nan"):
        _svi_step(nan_model, fi.AutoFlow(nan_model))


def test_diagnostics_bad_input():
    guide = fi.AutoFlow(_regression)
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 2"):
        fi.diagnose(_regression, guide, x, num_samples=0)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 2"):
        fi.to_inference_data(_regression, guide, x, num_samples=-1)
    with pytest.raises(TypeError, match="model must be a callable Pyro model"):
        fi.diagnose(3, guide)
    with pytest.raises(ValueError, match="discrete latent"):
        fi.diagnose(_discrete_model, fi.AutoFlow(_discrete_model))
