"""The one potential of a Pyro model (flowinfer.inference.potential)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide.initialization import InitMessenger, init_to_value

from flowinfer.inference.autoflow import AutoFlow
from flowinfer.inference.potential import ModelPotential


def lognormal_model():
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    pyro.sample("x", dist.Normal(0.0, scale), obs=torch.tensor(0.5))


def test_log_prob_is_the_log_joint_plus_the_jacobian():
    potential = ModelPotential(lognormal_model)
    u = torch.tensor([[0.3], [-1.0]])
    s = u.exp()
    expected = (dist.LogNormal(0.0, 1.0).log_prob(s) + dist.Normal(0.0, s).log_prob(
        torch.tensor(0.5)) + u).squeeze(-1)
    torch.testing.assert_close(potential.log_prob(u), expected)
    torch.testing.assert_close(potential.log_prob(u[0]), expected[0])


def test_safe_evaluation_turns_failures_into_zero_density():
    def fragile():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        if z > 1.0:
            raise RuntimeError("the simulator diverged")
        pyro.sample("x", dist.Normal(z, torch.where(z < -1.0, torch.nan, 1.0)),
                    obs=torch.tensor(0.0))

    start = init_to_value(values={"z": torch.tensor(0.0)})
    trace = pyro.poutine.trace(InitMessenger(start)(fragile)).get_trace()
    potential = ModelPotential.from_trace(fragile, trace)
    u = torch.tensor([[0.0], [2.0], [-2.0]])
    out = potential.log_prob(u, safe=True)
    assert math.isfinite(float(out[0])) and out[1] == -math.inf and out[2] == -math.inf
    with pytest.raises(RuntimeError, match="diverged"):
        potential.log_prob(u[1])


def test_the_guide_uses_the_same_potential():
    pyro.clear_param_store()
    guide = AutoFlow(lognormal_model, num_layers=1, warm_start=None)
    guide()
    u = torch.tensor([0.4])
    torch.testing.assert_close(guide.unconstrained_log_joint()(u),
                               ModelPotential(lognormal_model).log_prob(u))


def test_models_without_continuous_latents_are_refused():
    def discrete():
        pyro.sample("k", dist.Bernoulli(0.5))

    def none():
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))

    with pytest.raises(ValueError, match="discrete latent sites"):
        ModelPotential(discrete)
    with pytest.raises(ValueError, match="no latent sample sites"):
        ModelPotential(none)
    with pytest.raises(TypeError, match="callable Pyro model"):
        ModelPotential("model")
