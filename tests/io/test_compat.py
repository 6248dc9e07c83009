"""Checkpoints written by flowinfer 0.1.0 (commit 0bc5105, tests/data/make_legacy_checkpoints.py)
still load after the package was reorganised: a flow, a FlowPrior, an AutoFlow guide and a
fit_density training checkpoint that resumes."""

from __future__ import annotations

from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

import flowinfer as fi

DATA = Path(__file__).resolve().parents[1] / "data"
REFERENCE = torch.load(DATA / "legacy_v010_reference.pt", weights_only=True)
X = torch.tensor([[0.1, -0.2], [1.0, 0.5]])


def _model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    pyro.sample("y", dist.Normal(mu, scale).expand([len(y)]).to_event(1), obs=y)


def test_legacy_flow_loads_with_same_density():
    flow = fi.load(DATA / "legacy_v010_nsf.pt")
    torch.testing.assert_close(flow.log_prob(X).detach(), REFERENCE["nsf_log_prob"])


def test_legacy_prior_loads_as_prior():
    prior = fi.load(DATA / "legacy_v010_prior.pt")
    assert isinstance(prior, fi.FlowPrior)
    z = torch.tensor([[0.1, 0.2, 0.3]])
    torch.testing.assert_close(prior.log_prob(z).detach(), REFERENCE["prior_log_prob"])


def test_legacy_guide_loads_around_its_model():
    pyro.clear_param_store()
    y = torch.tensor([0.3, -1.2, 2.0, 0.7])
    guide = fi.load(DATA / "legacy_v010_autoflow.pt", model=_model, model_args=(y,))
    assert isinstance(guide, fi.AutoFlow)
    torch.testing.assert_close(guide.loc.detach(), REFERENCE["guide_loc"])


def test_legacy_training_checkpoint_loads_and_resumes(tmp_path):
    path = DATA / "legacy_v010_training.pt"
    flow = fi.load(path)
    torch.testing.assert_close(flow.log_prob(X).detach(), REFERENCE["training_log_prob"])
    data = fi.datasets.make_toy("moons", 200, seed=0)
    fresh = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(8,))
    result = fi.fit_density(fresh, data, epochs=3, batch_size=64, progress=False, resume=path)
    # The saved run finished epochs 0 and 1; resuming adds epoch 2 to its history.
    assert len(result.history["train_loss"]) == 3
