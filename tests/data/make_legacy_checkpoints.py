"""Writes the checkpoint files of tests/io/test_compat.py with flowinfer 0.1.0 (commit 0bc5105).

Run from the repository root of that commit: ``python tests/data/make_legacy_checkpoints.py``.
"""

import pyro
import pyro.distributions as dist
import torch

import flowinfer as fi

torch.manual_seed(0)
pyro.set_rng_seed(0)
out = "tests/data/"
flow = fi.build_flow("nsf", dim=2, num_layers=2, hidden=(8,), bins=4)
with torch.no_grad():
    for p in flow.parameters():
        p.add_(0.01 * torch.randn_like(p))
fi.save(flow, out + "legacy_v010_nsf.pt")
prior = fi.FlowPrior(3, flow="realnvp", num_layers=2, hidden=(8,))
fi.save(prior, out + "legacy_v010_prior.pt")


def model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    pyro.sample("y", dist.Normal(mu, scale).expand([len(y)]).to_event(1), obs=y)


y = torch.tensor([0.3, -1.2, 2.0, 0.7])
guide = fi.AutoFlow(model, flow="iaf", num_layers=1, hidden=(8,))
svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
for _ in range(5):
    svi.step(y)
fi.save(guide, out + "legacy_v010_autoflow.pt")
data = fi.datasets.make_toy("moons", 200, seed=0)
f2 = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(8,))
fi.fit_density(f2, data, epochs=2, batch_size=64, progress=False, seed=0,
               checkpoint=out + "legacy_v010_training.pt")
# Reference outputs that the loaded objects must reproduce.
x = torch.tensor([[0.1, -0.2], [1.0, 0.5]])
ref = {"nsf_log_prob": flow.log_prob(x).detach(),
       "prior_log_prob": prior.log_prob(torch.tensor([[0.1, 0.2, 0.3]])).detach(),
       "guide_loc": guide.loc.detach().clone(),
       "training_log_prob": f2.log_prob(x).detach()}
torch.save(ref, out + "legacy_v010_reference.pt")
