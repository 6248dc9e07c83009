"""Small Pyro models for the NPE tests (written here, not taken from the benchmark)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

#: Conjugate Gaussian: theta ~ N(MU0, S0) in 2-D, x_i ~ N(theta, SIGMA^2 I), i = 1..TRIALS.
MU0 = torch.tensor([0.5, -1.0])
S0 = torch.tensor([[1.0, 0.6], [0.6, 2.0]])
SIGMA = 0.8
TRIALS = 4


def gaussian_model():
    theta = pyro.sample("theta", dist.MultivariateNormal(MU0, S0))
    pyro.sample("x", dist.Normal(theta.unsqueeze(-2), SIGMA)
                .expand(theta.shape[:-1] + (TRIALS, 2)).to_event(2))


def exact_posterior(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of theta given x of shape (TRIALS, 2)."""
    prec0 = torch.linalg.inv(S0.double())
    prec = prec0 + TRIALS / SIGMA**2 * torch.eye(2, dtype=torch.float64)
    cov = torch.linalg.inv(prec)
    mean = cov @ (prec0 @ MU0.double() + x.double().sum(0) / SIGMA**2)
    return mean, cov


def bounded_model():
    """Uniform, positive and simplex latents: every kind of bounded support."""
    a = pyro.sample("a", dist.Uniform(0.0, 1.0))
    s = pyro.sample("s", dist.HalfNormal(1.0))
    w = pyro.sample("w", dist.Dirichlet(torch.ones(3)))
    loc = torch.stack([a, a + s, *w.unbind(-1)], -1)
    pyro.sample("x", dist.Normal(loc, 0.05).to_event(1))


def iid_model(trials: int = 6):
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 0.3))
    pyro.sample("x", dist.Normal(mu[..., None], scale[..., None])
                .expand(mu.shape + (trials,)).to_event(1))
