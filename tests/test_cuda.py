"""Flows, training and checkpoints on a CUDA device; skipped when no GPU is present.

Devices and dtypes must follow the parameters: ``flow.to("cuda")`` moves the base
distribution too, data given on the CPU is moved to the flow's device by the fitting
functions, and a checkpoint written on the GPU loads onto the CPU with ``map_location``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import flowinfer as fi

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

FLOWS = ["realnvp", "nsf", "maf", "iaf", "nsf-ar", "glow", "householder"]


def _build(name: str, **kw):
    if name == "householder":
        return fi.build_flow(name, dim=3, **kw)
    return fi.build_flow(name, dim=3, num_layers=2, hidden=(16,), **kw)


@pytest.mark.parametrize("name", FLOWS)
def test_to_cuda_moves_every_part(name):
    flow = _build(name, base="learnable").to("cuda")
    assert all(t.is_cuda for t in flow.state_dict().values())
    d = flow()
    assert d.base_dist.base_dist.loc.is_cuda
    x = flow.sample((5,))
    assert x.is_cuda
    assert flow.log_prob(x).is_cuda and d.log_prob(x).is_cuda
    y, log_q = flow.rsample_and_log_prob((4,))
    assert y.is_cuda and log_q.is_cuda
    assert torch.allclose(flow.log_prob(y), log_q, atol=1e-4)


@pytest.mark.parametrize("name", ["nsf", "maf"])
def test_cuda_matches_cpu_in_float64(name):
    torch.manual_seed(0)
    cpu = _build(name).double()
    with torch.no_grad():
        for p in cpu.parameters():
            p.add_(0.1 * torch.randn_like(p))
    gpu = fi.build_flow(name, dim=3, num_layers=2, hidden=(16,)).double().to("cuda")
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(64, 3, dtype=torch.float64)
    assert torch.allclose(gpu.log_prob(x.cuda()).cpu(), cpu.log_prob(x), atol=1e-10)


def test_fit_density_on_cuda_with_cpu_data():
    torch.manual_seed(0)
    data = np.random.default_rng(0).normal(size=(2000, 2)) * [2.0, 0.5] + 1.0
    flow = fi.build_flow("maf", dim=2, num_layers=2, hidden=(32,)).to("cuda")
    fi.fit_density(flow, data, epochs=20, batch_size=256, lr=1e-2, progress=False, seed=0)
    assert all(t.is_cuda for t in flow.state_dict().values())
    # MAF represents this Gaussian exactly, so the mean log-density ratio to the truth (a KL
    # estimate on the training rows) must be within 3 standard errors of a small
    # optimisation gap (0.02 nats; the same run on a CPU gives about 0.01).
    x = torch.as_tensor(data, dtype=torch.float32, device="cuda")
    truth = torch.distributions.Normal(torch.tensor([1.0, 1.0], device="cuda"),
                                       torch.tensor([2.0, 0.5], device="cuda"))
    with torch.no_grad():
        gap = truth.log_prob(x).sum(-1) - flow.log_prob(x)
    se = float(gap.std()) / math.sqrt(gap.numel())
    assert abs(float(gap.mean())) < 0.02 + 3 * se


def test_checkpoint_from_gpu_loads_on_cpu_and_gpu(tmp_path):
    flow = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(8,)).to("cuda")
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1)
    path = fi.save(flow, tmp_path / "gpu.pt")
    on_gpu = fi.load(path)
    on_cpu = fi.load(path, map_location="cpu")
    assert on_gpu.base_loc.is_cuda and not on_cpu.base_loc.is_cuda
    x = torch.randn(10, 2)
    assert torch.allclose(on_cpu.log_prob(x), flow.eval().log_prob(x.cuda()).cpu(), atol=1e-5)


def test_resume_on_cuda(tmp_path):
    data = torch.randn(300, 2)
    torch.manual_seed(1)
    flow = fi.build_flow("maf", dim=2, num_layers=2, hidden=(8,)).to("cuda")
    ckpt = tmp_path / "run.pt"
    fi.fit_density(flow, data, epochs=3, progress=False, seed=0, checkpoint=ckpt,
                   callback=lambda epoch, info: epoch == 0)
    torch.manual_seed(2)
    again = fi.build_flow("maf", dim=2, num_layers=2, hidden=(8,)).to("cuda")
    result = fi.fit_density(again, data, epochs=3, progress=False, resume=ckpt)
    assert len(result.history["train_loss"]) == 3
    assert all(t.is_cuda for t in again.state_dict().values())


def test_reverse_kl_on_cuda():
    flow = fi.build_flow("iaf", dim=2, num_layers=2, hidden=(16,)).to("cuda")

    def target(x):
        return -0.5 * ((x - 1.0) ** 2).sum(-1)

    result = fi.fit_reverse_kl(flow, target, steps=50, num_samples=128, lr=1e-2,
                               progress=False, seed=0)
    assert math.isfinite(result.history["loss"][-1])
    assert flow.sample((3,)).is_cuda


def test_prior_and_guide_follow_the_device():
    import pyro
    import pyro.distributions as pdist

    prior = fi.FlowPrior(2, flow="realnvp", num_layers=2, hidden=(8,)).to("cuda")
    assert prior.sample((3,)).is_cuda and prior().sample().is_cuda

    x = torch.randn(50, device="cuda") + 1.0

    def model(x):
        z = pyro.sample("z", pdist.Normal(torch.zeros(2, device=x.device), 1.0).to_event(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", pdist.Normal(z.sum(), 1.0), obs=x)

    pyro.clear_param_store()
    guide = fi.AutoFlow(model, flow="iaf", num_layers=2, hidden=(8,))
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.Trace_ELBO())
    for _ in range(3):
        assert math.isfinite(svi.step(x))
    assert all(t.is_cuda for t in guide.state_dict().values())
    assert guide(x)["z"].is_cuda
