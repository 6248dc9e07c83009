"""Sequential rounds with the atomic (APT) loss: the loss's minimiser is the posterior for a
proposal that is not the prior, the atoms live in each pair's own flow space, the rounds run."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from npe_models import gaussian_model
from torch import nn
from torch.distributions import Normal

import flowinfer as fi
from flowinfer.npe.loss import AtomicNPELoss, NPELoss
from flowinfer.npe.sequential import unconstrained_log_prior
from flowinfer.npe.training import training_tensors, validation_pairs

SMALL = {"num_layers": 2, "hidden": (16,)}
#: theta ~ N(0, 1), x ~ N(theta, NOISE); the proposal N(PROPOSAL) is not the prior.
NOISE, PROPOSAL = 0.5, (1.0, 0.3)


class _GaussianPosterior(nn.Module):
    """A stand-in flow: the exact posterior of theta given x (context), or the posterior
    times proposal / prior, which maximum likelihood on proposal pairs learns; ``width``
    scales its sd."""

    def __init__(self, target: str, width: float = 1.0) -> None:
        super().__init__()
        self.target, self.width = target, width

    def log_prob(self, z, context):
        precision, weighted = 1.0 + NOISE**-2, context[:, 0] / NOISE**2
        if self.target == "proposal":
            precision, weighted = precision - 1.0 + PROPOSAL[1]**-2, \
                weighted + PROPOSAL[0] / PROPOSAL[1]**2
        return Normal(weighted / precision, self.width * precision**-0.5).log_prob(z[:, 0])


def _batch_losses(loss_of, batch, size=250):
    n = batch[0].shape[0]
    return torch.stack([loss_of(tuple(t[i:i + size] for t in batch)) for i in range(0, n, size)])


def test_atomic_loss_is_lowest_at_the_posterior_for_a_proposal_that_is_not_the_prior():
    g = torch.Generator().manual_seed(0)
    n = 100_000
    theta = PROPOSAL[0] + PROPOSAL[1] * torch.randn(n, generator=g)
    x = theta + NOISE * torch.randn(n, generator=g)
    batch = (theta[:, None], x[:, None], torch.zeros(n, 1), Normal(0.0, 1.0).log_prob(theta),
             torch.zeros(n))
    exact = _batch_losses(AtomicNPELoss(_GaussianPosterior("exact"), nn.Identity()), batch)
    for other in (_GaussianPosterior("proposal"), _GaussianPosterior("exact", 1.3),
                  _GaussianPosterior("exact", 0.8)):
        diff = _batch_losses(AtomicNPELoss(other, nn.Identity()), batch) - exact
        # Paired batches: the mean difference over 400 batches and its standard error.
        se = diff.std() / diff.shape[0] ** 0.5
        assert diff.mean() > 4 * se, (other.target, other.width, diff.mean(), se)
    # Maximum likelihood on the same pairs prefers the proposal's posterior: the reason the
    # atomic loss exists.
    mle = (_batch_losses(NPELoss(_GaussianPosterior("proposal"), nn.Identity()), batch[:2])
           - _batch_losses(NPELoss(_GaussianPosterior("exact"), nn.Identity()), batch[:2]))
    assert mle.mean() < -4 * mle.std() / mle.shape[0] ** 0.5


def test_atoms_are_scored_in_each_pairs_own_flow_space():
    """With the regression standardiser the flow space depends on the data: atom j of pair i
    must be to_flow(u_j, x_i), and one atom leaves the likelihood of the prior's pairs."""
    torch.manual_seed(0)
    npe = fi.NPE(gaussian_model, "x", embedding="mlp", flow_options=SMALL,
                 standardize="regression")
    npe.fit(num_simulations=400, epochs=2, seed=0, progress=False)
    assert npe.scaling.latent.coef.shape[0] > 0  # the regression is in use
    npe.prior_pairs = 200
    z, xs, offset, log_prior, from_prior = (t[195:203] for t in
                                            training_tensors(npe, npe.simulations))
    assert from_prior.tolist() == [1.0] * 5 + [0.0] * 3
    u = npe.info.to_unconstrained({"theta": npe.simulations.latents["theta"][195:203]})
    with torch.no_grad():
        got = AtomicNPELoss(npe.flow, npe.embedding, num_atoms=3)((z, xs, offset, log_prior,
                                                                  from_prior))
        context = npe.embedding(xs)
        terms = []
        for i in range(8):
            atoms = u[[(i + k) % 8 for k in range(3)]]
            log_q = npe.flow.log_prob(npe.scaling.to_flow(atoms, xs[i:i + 1].expand(3, 4, 2)),
                                      context[i].expand(3, -1))
            logits = log_q - unconstrained_log_prior(npe, atoms)
            terms.append(logits.logsumexp(0) - logits[0] - from_prior[i] * log_q[0])
        assert torch.allclose(got, torch.stack(terms).mean(), atol=1e-5)
        one = AtomicNPELoss(npe.flow, npe.embedding, num_atoms=1)((z, xs, offset, log_prior,
                                                                  from_prior))
        mle = -(from_prior * npe.flow.log_prob(z, context)).mean()
        assert torch.allclose(one, mle, atol=1e-6)


def test_atomic_rounds_run_inside_the_support_and_weigh_members_on_prior_pairs():
    def model():
        theta = pyro.sample("theta", dist.Uniform(-3.0 * torch.ones(2), 3.0).to_event(1))
        pyro.sample("x", dist.Normal(theta, 0.1).to_event(1))

    x_o = torch.tensor([2.9, -1.0])  # near the box's edge
    npe = fi.NPE(model, "x", flow_options=SMALL)
    npe.fit(num_simulations=400, rounds=2, observation=x_o, sequential="atomic", epochs=20,
            seed=0, progress=False)
    assert len(npe.simulations) == 400 and npe.prior_pairs == 200
    assert npe.truncation == [] and npe.truncation_inside is None
    assert npe.selection["chosen"] == "mixture" and len(npe.results) == 2
    draws = npe.sample(2000, x=x_o)["theta"]
    assert (draws.abs() <= 3.0).all() and torch.isfinite(npe.log_prob({"theta": draws},
                                                                      x=x_o)).all()
    # The second round's pairs were drawn from q given x_o, so they lie nearer to it.
    distance = (npe.simulations.latents["theta"] - x_o).norm(dim=-1)
    assert distance[200:].median() < 0.5 * distance[:200].median()
    data = training_tensors(npe, npe.simulations)
    train = {"val_fraction": 0.2}
    z_val, _ = validation_pairs(*data, train=train, seed=0)
    z_all, _ = validation_pairs(*data[:2], train=train, seed=0)
    assert 0 < z_val.shape[0] < z_all.shape[0]
