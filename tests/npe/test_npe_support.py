"""Support-aware posteriors: draws never leave a bounded prior; densities include Jacobians."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from npe_models import bounded_model

import flowinfer as fi

SMALL = {"num_layers": 2, "hidden": (16,)}


def test_draws_stay_in_every_support_even_for_data_outside_the_prior():
    npe = fi.NPE(bounded_model, "x", flow_options=SMALL)
    npe.fit(num_simulations=300, epochs=5, seed=0, progress=False)
    # An observation no prior draw can explain: a = 1.3 and weights of -0.2.
    x = torch.tensor([1.3, 2.0, -0.2, 0.6, 0.6])
    draws = npe.sample(5000, x=x)
    assert draws["a"].shape == (5000,) and draws["w"].shape == (5000, 3)
    assert ((draws["a"] >= 0) & (draws["a"] <= 1)).all()
    assert (draws["s"] > 0).all()
    assert (draws["w"] >= 0).all() and torch.allclose(draws["w"].sum(-1), torch.ones(5000))
    assert bool(npe.info.in_support(draws).all())


def test_log_prob_is_minus_inf_outside_and_normalised_inside():
    def model():
        theta = pyro.sample("theta", dist.Uniform(0.0, 2.0))
        pyro.sample("x", dist.Normal(theta, 0.5))

    npe = fi.NPE(model, "x", flow_options=SMALL)
    npe.fit(num_simulations=300, epochs=5, seed=0, progress=False)
    x = torch.tensor(1.0)
    lp = npe.log_prob({"theta": torch.tensor([-0.1, 2.5])}, x=x)
    assert torch.isneginf(lp).all()
    # The constrained density integrates to 1 over (0, 2): the Jacobian is included.
    grid = torch.linspace(0.0, 2.0, 20001)[1:-1]
    with torch.no_grad():
        density = npe.log_prob({"theta": grid}, x=x).exp()
    integral = float(torch.trapezoid(density, grid))
    assert abs(integral - 1.0) < 2e-3


def test_log_prob_batch_shapes_and_inference_data():
    npe = fi.NPE(bounded_model, "x", flow_options=SMALL)
    npe.fit(num_simulations=200, epochs=2, seed=0, progress=False)
    x = npe.simulations.observed["x"][0]
    draws = npe.sample(12, x=x)
    values = {k: v.reshape(3, 4, *v.shape[1:]) for k, v in draws.items()}
    assert npe.log_prob(values, x=x).shape == (3, 4)
    idata = npe.to_inference_data(x=x, num_samples=50)
    assert idata.posterior["w"].shape == (1, 50, 3)
    assert "log_q" in idata.sample_stats


def test_sequential_rounds_keep_draws_in_the_prior():
    def model():
        theta = pyro.sample("theta", dist.Uniform(-3.0 * torch.ones(2), 3.0).to_event(1))
        pyro.sample("x", dist.Normal(theta, 0.1).to_event(1))

    npe = fi.NPE(model, "x", flow_options=SMALL)
    x = torch.tensor([2.9, -1.0])
    npe.fit(num_simulations=600, rounds=3, observation=x, epochs=5, seed=0, progress=False)
    assert len(npe.results) == 3 and len(npe.simulations) == 600
    # One prior-mass estimate per later round, a share of the prior.
    assert len(npe.truncation) == 2 and all(0.0 < m <= 1.0 for m in npe.truncation)
    assert 0.0 <= npe.truncation_inside <= 1.0
    later = npe.simulations.latents["theta"][200:]
    assert (later.abs() <= 3.0).all()


PRIORS = {"uniform": (dist.Uniform(-2.0 * torch.ones(3), 2.0),
                      lambda n: 4.0 * torch.rand(n, 3) - 2.0),
          # Not flat in any coordinates: the chains' acceptance must use its density.
          "lognormal": (dist.LogNormal(torch.zeros(3), 0.5),
                        lambda n: torch.exp(0.5 * torch.randn(n, 3)))}


@pytest.mark.parametrize("prior_name", sorted(PRIORS))
def test_truncated_prior_draws_are_distinct_and_match_rejection_sampling(prior_name):
    """The sampler against the definition: prior draws kept where log q - log prior >= the
    threshold."""
    from flowinfer.npe.sequential import region_score, region_threshold, truncated_prior_draws

    prior_dist, prior_draws = PRIORS[prior_name]

    def model():
        theta = pyro.sample("theta", prior_dist.to_event(1))
        pyro.sample("x", dist.Normal(theta, 0.4).to_event(1))

    torch.manual_seed(0)
    npe = fi.NPE(model, "x", embedding_options={"skip": False}, flow_options=SMALL)
    npe.fit(num_simulations=500, epochs=10, seed=0, progress=False)
    x, eps, n = torch.tensor([0.5, -0.5, 1.2]), 0.05, 2000
    region = {}
    draws = truncated_prior_draws(npe, x, n, seed=3, epsilon=eps, region=region)["theta"]
    # Resampling alone repeats draws; the Metropolis chains spread them out.
    assert torch.unique(draws, dim=0).shape[0] > 0.95 * n
    plain = truncated_prior_draws(npe, x, n, seed=3, epsilon=eps, mcmc_steps=0)["theta"]
    assert torch.unique(plain, dim=0).shape[0] < torch.unique(draws, dim=0).shape[0]
    with torch.random.fork_rng():
        torch.manual_seed(3)
        tau = region_threshold(npe, x, eps)
    prior = prior_draws(150_000)
    u = npe.info.to_unconstrained({"theta": prior})
    ref = prior[region_score(npe, u, x) >= tau]
    assert ref.shape[0] > 5 * n
    # The region's prior mass: the importance estimate from q's 20,000 candidates against
    # the share of 150,000 prior draws inside. Each candidate's term inside * prior / q
    # lies in [0, exp(-tau)], so its variance is at most exp(-tau) * mass.
    share = ref.shape[0] / prior.shape[0]
    se = (math.exp(-tau.item()) * share / (10 * n) + share * (1 - share) / prior.shape[0])
    assert abs(region["prior_mass"] - share) < 5 * se**0.5, (region["prior_mass"], share)
    # Means and sds within 5 standard errors of the difference (draws treated as
    # independent: the chains are, and 30 steps leave little of their shared starts).
    se_mean = (ref.var(0) / n + ref.var(0) / ref.shape[0]).sqrt()
    assert ((draws.mean(0) - ref.mean(0)).abs() < 5 * se_mean).all(), (draws.mean(0),
                                                                         ref.mean(0))
    # The sd's standard error is sd * sqrt((kurtosis - 1) / 4n): 1/sqrt(2n) of it for a
    # normal, more for the skewed, heavy-tailed truncated lognormal.
    kurtosis = ((ref - ref.mean(0)) ** 4).mean(0) / ref.var(0) ** 2
    se_sd = ref.std(0) * ((kurtosis - 1) / (4 * n)).sqrt()
    assert ((draws.std(0) - ref.std(0)).abs() < 5 * se_sd).all(), (draws.std(0), ref.std(0))


def test_truncated_prior_chains_need_two_region_draws_for_their_step_shape():
    from flowinfer.npe.sequential import _metropolis

    start = torch.randn(5, 2)
    # One draw inside the region gives no covariance: the starts come back unmoved.
    out = _metropolis(None, None, start, torch.zeros(5), torch.tensor(0.0),
                      start[:1], steps=30)
    assert torch.equal(out, start)


def test_each_sequential_round_trains_afresh_on_all_pairs(monkeypatch):
    """Round r starts from the untrained networks and standardises with all pairs so far
    (continuing the last round's networks overfitted them: docs/npe.md)."""
    import flowinfer.npe.training as training

    def model():
        theta = pyro.sample("theta", dist.Uniform(-3.0 * torch.ones(2), 3.0).to_event(1))
        pyro.sample("x", dist.Normal(theta, 0.1).to_event(1))

    starts, original = [], training.train_one

    def recording(npe, *data, **options):
        starts.append({k: v.clone() for k, v in npe.flow.state_dict().items()})
        return original(npe, *data, **options)

    monkeypatch.setattr(training, "train_one", recording)
    npe = fi.NPE(model, "x", embedding="mlp", flow_options=SMALL)
    npe.fit(num_simulations=400, rounds=2, observation=torch.tensor([1.0, -1.0]), epochs=3,
            seed=0, progress=False)
    assert len(starts) == 2
    assert all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])
    trained = npe.flow.state_dict()
    assert not all(torch.equal(starts[0][k], trained[k]) for k in trained)
    u = npe.info.to_unconstrained({"theta": npe.simulations.latents["theta"]})
    assert torch.allclose(npe.scaling.theta.mean, u.mean(0), atol=1e-5)


def _exact_estimator(npe, posterior):
    """A stand-in for a trained 1-D ``npe`` whose posterior given ``x`` is exactly the
    distribution ``posterior(x)`` (the region functions need only these attributes)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        info=npe.info, _spec_for_simulation=npe._spec_for_simulation,
        sample_unconstrained=lambda n, x: posterior(x).sample((n, 1)),
        log_prob_unconstrained=lambda u, x: posterior(x).log_prob(u[..., 0]))


def test_truncation_region_is_where_posterior_over_prior_is_high():
    """Of the regions holding 1 - epsilon of q, the one with q / prior above a threshold has
    the least prior mass (Neyman-Pearson). With a N(0, 1) prior and posterior N(m, s^2) the
    region is an interval around the ratio's maximum ``m / (1 - s^2)``, not around ``m``:
    checked against a stand-in estimator whose density is that exact posterior."""
    from flowinfer.npe.sequential import region_score, region_threshold

    def model():
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(theta, 0.5))

    m, s = 0.8, 0.5 ** 0.5
    posterior = dist.Normal(m, s)
    exact = _exact_estimator(fi.NPE(model, "x", flow_options=SMALL), lambda x: posterior)
    torch.manual_seed(0)
    eps = 0.05
    tau = region_threshold(exact, None, eps)
    grid = torch.linspace(-4.0, 6.0, 20001)[:, None]
    inside = grid[region_score(exact, grid, None) >= tau, 0]
    centre = m / (1 - s**2)
    assert abs(float(inside.min() + inside.max()) / 2 - centre) < 0.01
    # It holds 1 - eps of the posterior (up to the threshold's Monte Carlo error) ...
    mass = float(posterior.cdf(inside.max()) - posterior.cdf(inside.min()))
    assert abs(mass - (1 - eps)) < 0.01
    # ... with less prior mass than the posterior's own highest-density interval.
    half = s * math.sqrt(2) * float(torch.special.erfinv(torch.tensor(1 - eps)))
    prior = dist.Normal(0.0, 1.0)
    ratio_prior = float(prior.cdf(inside.max()) - prior.cdf(inside.min()))
    hdr_prior = float(prior.cdf(torch.tensor(m + half)) - prior.cdf(torch.tensor(m - half)))
    assert ratio_prior < hdr_prior - 0.01


def test_posterior_inside_matches_the_exact_share():
    """With a stand-in estimator whose density is the exact posterior (N(0, 1) prior, noise
    sd 0.5: posterior N(0.8 x, 0.2)), the share of a pair's posterior inside the region is a
    normal probability of the region's interval; the median over five data sets matches it
    within four Monte Carlo standard errors of 4,000 draws."""
    from flowinfer.npe.sequential import posterior_inside, region_score, region_threshold

    def model():
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(theta, 0.5))

    def posterior(x):
        return dist.Normal(0.8 * torch.as_tensor(x["x"] if isinstance(x, dict) else x),
                           0.2 ** 0.5)

    exact = _exact_estimator(fi.NPE(model, "x", flow_options=SMALL), posterior)
    torch.manual_seed(0)
    x_o = torch.tensor(1.0)
    tau = float(region_threshold(exact, x_o, 0.01))
    grid = torch.linspace(-4.0, 6.0, 20001)[:, None]
    inside = grid[region_score(exact, grid, x_o) >= tau, 0]
    data = torch.tensor([1.0, 1.6, 2.2, 2.6, 3.5])
    shares = [float(posterior(x).cdf(inside.max()) - posterior(x).cdf(inside.min()))
              for x in data]
    expected = sorted(shares)[2]
    assert 0.2 < expected < 0.9  # the median pair's posterior is cut, not whole or gone
    got = posterior_inside(exact, x_o, tau, {"x": data}, seed=0, draws=4000)
    assert abs(got - expected) < 4 * (expected * (1 - expected) / 4000) ** 0.5
    for bad in ({"pairs": 0}, {"draws": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            posterior_inside(exact, x_o, tau, {"x": data}, seed=0, **bad)


def test_sequential_rounds_survive_a_simulator_that_fails_on_part_of_the_prior():
    """Data NaN for theta > 2 (a third of the prior): those pairs are dropped and counted,
    and the rounds still run, drawing only inside the prior."""
    def model():
        theta = pyro.sample("theta", dist.Uniform(-4.0, 2.0 + 2.0 * torch.ones(())))
        mean = torch.where(theta > 2.0, torch.full_like(theta, float("nan")), theta)
        pyro.sample("x", dist.Normal(mean, 0.3, validate_args=False))

    npe = fi.NPE(model, "x", embedding="mlp", flow_options=SMALL)
    npe.fit(num_simulations=600, rounds=2, observation=torch.tensor(1.5), epochs=5, seed=0,
            progress=False)
    assert len(npe.results) == 2 and len(npe.truncation) == 1
    # Round 1 alone draws 300 from the prior, a third of them (about 100) with theta > 2.
    assert npe.simulations.num_nonfinite > 50
    assert torch.isfinite(npe.simulations.observed["x"]).all()
    draws = npe.sample(500, x=torch.tensor(1.5))["theta"]
    assert ((draws > -4.0) & (draws < 4.0)).all()
    assert torch.isfinite(npe.log_prob({"theta": draws}, x=torch.tensor(1.5))).all()
