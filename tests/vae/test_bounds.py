"""Per-datapoint importance weights and the IWAE bound against exact evidence, and bad input."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from flowinfer.vae.bounds import iwae_bound, log_importance_weights


def linear_gaussian(n=6, dim_x=3, seed=0):
    """z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I): log p(x) and p(z | x) are exact."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(dim_x, 2, generator=g, dtype=torch.float64)
    b = torch.randn(dim_x, generator=g, dtype=torch.float64)
    s = 0.5
    x = torch.randn(n, dim_x, generator=g, dtype=torch.float64) * 2

    def model(x, **guide_options):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + b, s).to_event(1), obs=x)

    cov_post = torch.linalg.inv(torch.eye(2, dtype=torch.float64) + W.T @ W / s**2)
    mean_post = (x - b) @ W @ cov_post.T / s**2
    log_px = dist.MultivariateNormal(b, W @ W.T + s**2 * torch.eye(dim_x)).log_prob(x)

    def guide(x, widen=1.0, shift=0.0):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean_post + shift, widen * cov_post))

    return model, guide, x, log_px


def test_exact_posterior_gives_log_evidence_for_every_point():
    # With q = p(z | x) every weight equals p(x): both bounds are exact, point by point.
    model, guide, x, log_px = linear_gaussian()
    bounds = iwae_bound(model, guide, x, num_particles=50, chunk_size=20)
    assert bounds.iwae.shape == (len(x),)
    torch.testing.assert_close(bounds.iwae, log_px)
    torch.testing.assert_close(bounds.elbo, log_px)


def test_iwae_at_least_elbo_and_below_log_evidence():
    # A wrong guide (shifted and widened). Pyro's own Trace_ELBO, on independent draws,
    # checks our weights; the IWAE bound with K = 1000 must lie above that ELBO and at most a
    # few standard errors above the exact log p(x).
    pyro.set_rng_seed(0)
    model, guide, x, log_px = linear_gaussian()
    kwargs = {"widen": 2.0, "shift": 0.7}
    bounds = iwae_bound(model, guide, x, num_particles=1000, chunk_size=250, **kwargs)

    particles = 4000
    log_w = log_importance_weights(model, guide, x, num_particles=particles, **kwargs)
    elbo_total = log_w.sum(-1)          # one joint ELBO draw per particle
    elbo_se = elbo_total.std() / math.sqrt(particles)
    pyro_elbo = -pyro.infer.Trace_ELBO(num_particles=particles, vectorize_particles=True,
                                       max_plate_nesting=1).loss(model, guide, x, **kwargs)
    assert abs(pyro_elbo - elbo_total.mean().item()) < 4 * math.sqrt(2) * elbo_se
    assert bounds.iwae.sum().item() > pyro_elbo + 4 * elbo_se.item()

    # Delta-method standard error of log(mean w) from K draws, per point.
    w = (log_w[:1000] - log_w[:1000].max(0).values).exp()
    iwae_se = (w.std(0) / w.mean(0) / math.sqrt(1000)).pow(2).sum().sqrt()
    assert bounds.iwae.sum() < log_px.sum() + 4 * iwae_se
    assert (bounds.iwae >= bounds.elbo).all()


# ------------------------------------------------------------------ input checks
def test_bad_bound_arguments():
    model, guide, x, _ = linear_gaussian()
    with pytest.raises(ValueError, match="num_particles must be an integer >= 1, got 0"):
        iwae_bound(model, guide, x, num_particles=0)
    with pytest.raises(TypeError, match="num_particles must be an integer"):
        iwae_bound(model, guide, x, num_particles=10.0)
    with pytest.raises(ValueError, match="chunk_size must be an integer >= 1, got 0"):
        iwae_bound(model, guide, x, chunk_size=0)
    with pytest.raises(ValueError, match="max_plate_nesting must be an integer >= 1, got 0"):
        iwae_bound(model, guide, x, max_plate_nesting=0)
    with pytest.raises(ValueError, match="max_plate_nesting must be an integer >= 1, got 0"):
        log_importance_weights(model, guide, x, max_plate_nesting=0)
    with pytest.raises(TypeError, match="num_particles must be an integer"):
        log_importance_weights(model, guide, x, num_particles="4")
    with pytest.raises(TypeError, match="model must be callable"):
        iwae_bound(None, guide, x)
    with pytest.raises(TypeError, match="guide must be callable"):
        log_importance_weights(model, 3, x)
