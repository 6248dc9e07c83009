"""Non-centring of funnel sites: which sites, the same density, and fi.infer's use of it."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import flowinfer as fi
from flowinfer.inference.reparam import funnel_sites, noncentered

pytestmark = pytest.mark.usefixtures("fresh_pyro")


def funnel(dim: int = 4):
    # Neal's funnel: v ~ N(0, 3^2), x_i | v ~ N(0, exp(v / 2)^2); v's moments are exact.
    v = pyro.sample("v", dist.Normal(0.0, 3.0))
    pyro.sample("x", dist.Normal(torch.zeros(dim - 1), torch.exp(v / 2)[..., None]).to_event(1))


def hierarchical(y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfNormal(5.0))
    with pyro.plate("groups", y.shape[-1]):
        theta = pyro.sample("theta", dist.StudentT(4.0, mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def test_only_sites_whose_scale_is_latent_are_funnel_sites():
    def model():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))                  # fixed scale
        b = pyro.sample("b", dist.Normal(a, 1.0))                    # latent loc only
        s = pyro.sample("s", dist.LogNormal(0.0, 1.0))               # positive support
        pyro.sample("c", dist.Normal(b, s))                          # latent scale
        pyro.sample("d", dist.StudentT(3.0, 0.0, s).expand([2]).to_event(1))
        pyro.sample("e", dist.TransformedDistribution(               # not loc-scale
            dist.Normal(0.0, s), [dist.transforms.ExpTransform()]))
        pyro.sample("m", dist.Normal(0.0, s).mask(False))            # LocScaleReparam can't

    values = {"a": torch.tensor(0.1), "b": torch.tensor(0.2), "s": torch.tensor(1.5),
              "c": torch.tensor(0.3), "d": torch.zeros(2), "e": torch.tensor(1.0),
              "m": torch.tensor(0.0)}
    assert funnel_sites(model, values, (), {}) == {"c": (), "d": ("df",)}


def test_a_model_that_cannot_be_traced_has_no_funnel_sites():
    def broken():
        raise RuntimeError("simulator down")

    assert funnel_sites(broken, {}, (), {}) == {}


def test_noncentred_potential_equals_the_hand_written_density():
    # Regression: the guide's model sits inside an InitMessenger, which poutine.reparam
    # applied to the original site before conditioning, so the potential read init values.
    sites = funnel_sites(hierarchical, {"mu": torch.tensor(0.0), "tau": torch.tensor(1.0),
                                        "theta": torch.zeros(8)}, (Y, SIGMA), {})
    assert sites == {"theta": ("df",)}
    model = noncentered(hierarchical, sites)
    guide = fi.AutoFlow(model, num_layers=1, warm_start=None)
    guide(Y, SIGMA)
    log_joint = guide.unconstrained_log_joint(Y, SIGMA)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        u = torch.randn(10, generator=g)
        mu, log_tau, z = u[0], u[1], u[2:]
        tau = log_tau.exp()
        exact = (dist.Normal(0.0, 5.0).log_prob(mu) + dist.HalfNormal(5.0).log_prob(tau)
                 + log_tau + dist.StudentT(4.0).log_prob(z).sum()
                 + dist.Normal(mu + tau * z, SIGMA).log_prob(Y).sum())
        assert float(log_joint(u)) == pytest.approx(float(exact), abs=1e-4)


FAST = {"flow_options": {"num_layers": 2, "hidden": (16,)}, "num_starts": 4,
        "check_draws": 2000, "num_draws": 1000, "progress": False, "report": False, "seed": 0}


def test_infer_noncentres_a_funnel_and_recovers_the_exact_moments():
    idata = fi.infer(funnel, **FAST)
    assert idata.attrs["reparam"].startswith("non-centred x"), idata.attrs["reparam"]
    assert idata.attrs["route"] == "vi" and idata.attrs["checks_passed"]
    assert set(idata.posterior.data_vars) == {"v", "x", "x_decentered"}
    # The rewritten site is a computed value, never data: no log likelihood, no observation.
    assert "observed_data" not in idata.groups() or "x" not in idata.observed_data
    v = torch.as_tensor(idata.posterior["v"].values.reshape(-1))
    ess = min(float(idata.attrs["ess"]), v.numel())
    # v ~ N(0, 3^2): four standard errors of a mean and of an sd from `ess` draws.
    assert abs(float(v.mean())) < 4 * 3.0 / math.sqrt(ess)
    assert abs(float(v.std()) - 3.0) < 4 * 3.0 / math.sqrt(2 * ess)


def test_reparam_none_keeps_the_centred_model():
    idata = fi.infer(funnel, reparam="none", route="vi", **FAST)
    assert idata.attrs["reparam"].startswith("none")
    assert set(idata.posterior.data_vars) == {"v", "x"}


def test_reparam_option_is_checked():
    with pytest.raises(ValueError, match="reparam"):
        fi.infer(funnel, reparam="centred", **FAST)


def test_noncentred_hierarchical_model_keeps_its_groups():
    idata = fi.infer(hierarchical, Y, SIGMA, reparam="noncentered", route="vi", **FAST)
    assert idata.attrs["reparam"].startswith("non-centred theta")
    assert list(idata.log_likelihood.data_vars) == ["y"]
    assert list(idata.observed_data.data_vars) == ["y"]
    assert idata.posterior["theta"].shape == (4, 250, 8)
