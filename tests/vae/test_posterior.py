"""AmortizedFlowPosterior: shapes, the density, a VAE trained with it, and bad input."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import flowinfer as fi
from flowinfer.vae.bounds import iwae_bound, log_importance_weights
from flowinfer.vae.posterior import AmortizedFlowPosterior


def perturbed_posterior(dim=3, context_dim=4, seed=0, **hyper):
    """A posterior moved away from the identity (at the identity, checks are trivial)."""
    torch.manual_seed(seed)
    hyper = {"num_layers": 2, "hidden": (16,), **hyper}
    q = AmortizedFlowPosterior(dim, context_dim=context_dim, **hyper)
    with torch.no_grad():
        for p in q.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return q


def test_lazy_export():
    assert fi.AmortizedFlowPosterior is AmortizedFlowPosterior
    assert fi.iwae_bound is iwae_bound


def test_shapes_inside_plates():
    q = perturbed_posterior()
    loc, scale, ctx = torch.randn(5, 3), torch.rand(5, 3) + 0.5, torch.randn(5, 4)
    d = q(loc, scale, ctx)
    assert d.batch_shape == (5,) and d.event_shape == (3,)
    z = d.rsample((7,))
    assert z.shape == (7, 5, 3)
    assert d.log_prob(z).shape == (7, 5)

    def guide():
        with pyro.plate("particles", 2, dim=-2), pyro.plate("data", 5):
            return pyro.sample("z", q(loc, scale, ctx))

    assert guide().shape == (2, 5, 3)


def test_starts_at_the_encoder_gaussian():
    q = AmortizedFlowPosterior(3, context_dim=4, num_layers=2, hidden=(16,))
    loc, scale, ctx = torch.randn(5, 3), torch.rand(5, 3) + 0.5, torch.randn(5, 4)
    z = torch.randn(5, 3)
    torch.testing.assert_close(q(loc, scale, ctx).log_prob(z),
                               dist.Normal(loc, scale).to_event(1).log_prob(z))


def test_log_prob_of_own_samples_matches_a_fresh_inverse():
    # rsample leaves (x, y, log|det|) in the bijectors' stash; scoring a copy of the samples
    # forces the inverse path (dim MADE passes for IAF), which must agree.
    q = perturbed_posterior().double()
    loc = torch.randn(6, 3, dtype=torch.float64)
    scale = torch.rand(6, 3, dtype=torch.float64) + 0.5
    ctx = torch.randn(6, 4, dtype=torch.float64)
    d = q(loc, scale, ctx)
    z = d.rsample((4,))
    torch.testing.assert_close(d.log_prob(z), q(loc, scale, ctx).log_prob(z.clone()))


def test_density_integrates_to_one_1d():
    # 1-D latent, context-dependent flow on a Gaussian base with loc 1, scale 0.7: the
    # trapezoid rule on [-15, 15] leaves a negligible tail for these perturbation sizes.
    q = perturbed_posterior(dim=1, context_dim=2).double()
    grid = torch.linspace(-15, 15, 20001, dtype=torch.float64).unsqueeze(-1)
    for ctx in torch.randn(3, 2, dtype=torch.float64):
        d = q(torch.ones(1, dtype=torch.float64), 0.7, ctx)
        with torch.no_grad():
            density = d.log_prob(grid).exp()
        assert abs(torch.trapezoid(density, grid.squeeze(-1)).item() - 1.0) < 1e-3


def test_from_features_splits_loc_scale_context():
    q = AmortizedFlowPosterior(2, context_dim=3, num_layers=1, hidden=(8,))
    assert q.num_features == 7
    features = torch.randn(4, 7)
    loc, scale, ctx = q.split_features(features)
    assert loc.shape == scale.shape == (4, 2) and ctx.shape == (4, 3)
    assert (scale > 0).all()
    assert q.from_features(features).batch_shape == (4,)
    gaussian_only = AmortizedFlowPosterior(2, context_dim=0, num_layers=1, hidden=(8,))
    assert gaussian_only.split_features(torch.randn(4, 4))[2] is None


# ------------------------------------------------------------------ a VAE step
class TinyVAE(nn.Module):
    def __init__(self, data_dim=6, latent_dim=2, context_dim=4):
        super().__init__()
        self.latent_dim = latent_dim
        self.posterior = AmortizedFlowPosterior(latent_dim, context_dim, num_layers=2,
                                                hidden=(8,))
        self.encoder = nn.Linear(data_dim, self.posterior.num_features)
        self.decoder = nn.Linear(latent_dim, data_dim)
        self.prior = fi.FlowPrior(latent_dim, num_layers=2, hidden=(8,))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        pyro.module("prior", self.prior)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        pyro.module("posterior", self.posterior)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior.from_features(self.encoder(x)))


def tiny_vae(seed=0):
    torch.manual_seed(seed)
    return TinyVAE()


@pytest.mark.parametrize("jit", [False, True], ids=["Trace_ELBO", "JitTrace_ELBO"])
def test_vae_svi_steps_train_every_part(jit):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = tiny_vae()
    x = torch.bernoulli(torch.full((16, 6), 0.3))
    before = {n: p.detach().clone() for n, p in vae.named_parameters()}
    # The shape checks are constants for the trace; their warnings are expected.
    loss = pyro.infer.JitTrace_ELBO(ignore_jit_warnings=True) if jit else pyro.infer.Trace_ELBO()
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), loss)
    losses = [svi.step(x) for _ in range(5)]
    assert all(math.isfinite(v) for v in losses)
    for part in ("encoder", "decoder", "prior", "posterior"):
        moved = [not torch.equal(p, before[n]) for n, p in vae.named_parameters()
                 if n.startswith(part)]
        assert any(moved), f"{part} did not train"


@pytest.mark.slow
def test_flow_posterior_beats_gaussian_on_a_skewed_posterior():
    # z ~ N(0, 1) (1-D), x | z ~ N(z^2 / 2 + z, 0.2): the posterior is skewed/bimodal in z,
    # so the spline-flow posterior must reach a higher held-out ELBO than the Gaussian one,
    # by more than 4 standard errors of the paired per-point difference.
    torch.manual_seed(0)
    pyro.set_rng_seed(0)

    def simulate(n):
        z = torch.randn(n, 1)
        return z**2 / 2 + z + 0.2 * torch.randn(n, 1)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z**2 / 2 + z, 0.2).to_event(1), obs=x)

    train, test = simulate(512), simulate(500)
    elbos = {}
    for context_dim, flow_hyper in ((0, {"num_layers": 1}), (8, {"num_layers": 4})):
        pyro.clear_param_store()
        torch.manual_seed(0)
        # A spline flow: in one dimension an affine IAF, however conditioned, is still a
        # Gaussian, the family it is compared with.
        q = AmortizedFlowPosterior(1, context_dim=context_dim, flow="nsf-ar", hidden=(32,),
                                   **flow_hyper)
        encoder = nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, q.num_features))
        flow_guide = context_dim > 0

        def guide(x, q=q, encoder=encoder, flow_guide=flow_guide):
            pyro.module("encoder", encoder)
            features = encoder(x)
            if flow_guide:
                pyro.module("q", q)
                d = q.from_features(features)
            else:
                loc, scale, _ = q.split_features(features)
                d = dist.Normal(loc, scale).to_event(1)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", d)

        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}),
                             pyro.infer.Trace_ELBO(num_particles=4, vectorize_particles=True,
                                                   max_plate_nesting=1))
        for _ in range(1500):
            svi.step(train)
        pyro.set_rng_seed(1)
        elbos[flow_guide] = iwae_bound(model, guide, test, num_particles=200).elbo
    diff = elbos[True] - elbos[False]
    se = diff.std() / math.sqrt(len(diff))
    assert diff.mean() > 4 * se, (diff.mean().item(), se.item())



def test_bounds_on_a_vae_batch():
    # The check on a VAE: IWAE (K = 500) >= ELBO on the same batch.
    pyro.set_rng_seed(1)
    vae = tiny_vae()
    x = torch.bernoulli(torch.full((8, 6), 0.3))
    bounds = iwae_bound(vae.model, vae.guide, x, num_particles=500)
    pyro_elbo = -pyro.infer.Trace_ELBO(num_particles=500, vectorize_particles=True,
                                       max_plate_nesting=1).loss(vae.model, vae.guide, x)
    log_w = log_importance_weights(vae.model, vae.guide, x, num_particles=500)
    se = log_w.sum(-1).std().item() / math.sqrt(500)
    assert bounds.iwae.sum().item() >= pyro_elbo - 4 * se
    assert (bounds.iwae >= bounds.elbo).all()


# ------------------------------------------------------------------ input checks
def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="dim must be an integer >= 1, got 0"):
        AmortizedFlowPosterior(0)
    with pytest.raises(TypeError, match="dim must be an integer"):
        AmortizedFlowPosterior(2.0)
    with pytest.raises(ValueError, match="context_dim must be an integer >= 0, got -1"):
        AmortizedFlowPosterior(2, context_dim=-1)
    with pytest.raises(TypeError, match="context_dim must be an integer"):
        AmortizedFlowPosterior(2, context_dim=None)
    with pytest.raises(TypeError, match="flow must be"):
        AmortizedFlowPosterior(2, flow=3)
    with pytest.raises(ValueError, match="does not support context"):
        AmortizedFlowPosterior(2, context_dim=3, flow="planar")
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        AmortizedFlowPosterior(2, bins=3)


def test_bad_call_arguments():
    q = AmortizedFlowPosterior(2, context_dim=3, num_layers=1, hidden=(8,))
    loc, scale, ctx = torch.zeros(4, 2), torch.ones(4, 2), torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"loc must have shape \(\.\.\., 2\)"):
        q(torch.zeros(4, 3), scale, ctx)
    with pytest.raises(TypeError, match="loc must be a torch.Tensor, got list"):
        q([0.0, 0.0], scale, ctx)
    with pytest.raises(ValueError, match="scale must broadcast"):
        q(loc, torch.ones(3, 2), ctx)
    with pytest.raises(ValueError, match="context is required"):
        q(loc, scale)
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 3\)"):
        q(loc, scale, torch.zeros(4, 5))
    with pytest.raises(TypeError, match="context must be a torch.Tensor"):
        q(loc, scale, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"features must be a tensor of shape \(\.\.\., 7\)"):
        q.from_features(torch.zeros(4, 6))
    with pytest.raises(TypeError, match="features must be a torch.Tensor"):
        q.from_features(None)
    unconditional = AmortizedFlowPosterior(2, num_layers=1, hidden=(8,))
    with pytest.raises(ValueError, match="context_dim=0"):
        unconditional(loc, scale, ctx)
