"""Sequential rounds for one observation: truncated sequential NPE (TSNPE, the default) or
the atomic APT loss (``sequential="atomic"``).

After a round, the next round's parameters are drawn from the *prior truncated* to a region
that holds ``1 - epsilon`` of the current posterior estimate ``q(theta | x_o)``'s mass
(``epsilon = 1e-4``). Why this method is the default and not the atomic (APT) loss:

- the proposal is the prior restricted to a region that holds (almost) all of the
  posterior, so the ratio posterior/proposal is the same as posterior/prior there, and the
  plain maximum-likelihood loss stays correct: training is unchanged (one loss, the same
  ``NPELoss``), with no atoms and no proposal density in the loss;
- the atomic loss (:class:`~flowinfer.npe.loss.AtomicNPELoss`, offered as
  ``sequential="atomic"``: proposals from ``q`` itself) is correct for any proposal, and
  its known failure (leakage outside the prior) is what our support-aware flow removes by
  construction; but it scores each pair against nine atoms only, and in several dimensions
  those lie so far from the pair's posterior that the loss barely depends on the
  posterior's shape (``benchmarks/npe_atomic_signal.py``: in 10-D a 10% width error costs
  it a tenth of what it costs the likelihood); it scored worse than truncation on the
  sbibm tasks measured (docs/npe.md "Sequential rounds").

Which region: of all regions holding ``1 - epsilon`` of ``q``'s mass, the one with the least
*prior* mass is where the ratio ``q(theta | x_o) / p(theta)`` exceeds a threshold (the
Neyman-Pearson lemma), so the next round's simulations are as dense as they can be where the
posterior is. The ratio is the same in any coordinates (both densities carry the same
Jacobian); a highest-density region of ``q`` is not: in the unconstrained (logit) space of a
bounded prior it favoured the box's centre, whose Jacobian is largest, over posterior mass
near the box's edge. After one round of 1,000 (``benchmarks/npe_truncation.py --regions``,
observations 1-3) on gaussian_linear_uniform that region kept 24-55% of the prior and left
0.11-0.47% of the reference posterior outside; the ratio region keeps 8-22% and leaves
0.01-0.06% outside. On slcp, two_moons and sir the ratio region was smaller too, and it
left no more of the reference outside. For a uniform prior the ratio region is ``q``'s
highest-density region in the parameters' own space, Deistler et al.'s choice.

Each round then trains the estimator again from its untrained weights on all simulations so
far (``NPE._restart``): networks that kept training from the last round overfitted the pairs
they had already seen within an epoch or two (docs/npe.md "Sequential rounds").

Its limit: at every simulated ``x`` the loss teaches the posterior cut to the region (the
posterior itself at ``x_o``). In several dimensions most of a region's volume lies near its
edge, so most pairs' own posteriors reach past it, and the cut densities are harder to
learn than the smooth ones prior simulations teach: with 10-D posteriors, training on the
exact region's simulations gave a worse posterior at ``x_o`` than the same number of prior
simulations at 10,000 (``benchmarks/npe_focus.py``; at 1,000 the denser simulations won).
:func:`posterior_inside` measures it for the second round (``npe.truncation_inside``).

Drawing from the truncated prior without rejection sampling (which stalls when the region is
a tiny part of the prior): draw from ``q`` itself, keep the draws inside the region, and
resample them with importance weights ``prior / q`` (bounded: inside the region ``q / prior``
is at least the threshold). Bounded is not even: the weights grow towards the region's edge,
where ``q`` puts few draws, so in several dimensions the resampled set repeats a few draws
(213 distinct draws of 1000 on a 10-D uniform-prior task, ``benchmarks/npe_truncation.py``).
Each resampled draw therefore starts a random-walk Metropolis chain whose target is the
truncated prior itself (prior density inside the region, zero outside; steps shaped by the
covariance of ``q``'s draws), and the chains' states after ``mcmc_steps`` steps are
returned: the chains leave the target unchanged and spread the repeated starts.

Example:
    >>> import torch, pyro, pyro.distributions as dist, flowinfer as fi
    >>> def model():
    ...     theta = pyro.sample("theta", dist.Uniform(-3.0, 3.0))
    ...     pyro.sample("x", dist.Normal(theta, 0.1))
    >>> npe = fi.NPE(model, "x", flow_options={"num_layers": 1, "hidden": (16,)})
    >>> _ = npe.fit(num_simulations=400, rounds=2, observation=torch.tensor(1.0), seed=0,
    ...             epochs=5, progress=False)
    >>> len(npe.simulations)
    400

References:
    Deistler, Goncalves, Macke (2022), "Truncated proposals for scalable and hassle-free
    simulation-based inference", NeurIPS.
    Greenberg, Nonnenmacher, Macke (2019), "Automatic posterior transformation for
    likelihood-free inference", ICML (APT, the alternative discussed above).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from flowinfer.checks import check_int, check_number
from flowinfer.npe.chunks import latent_log_prior

__all__ = ["simulate_round", "truncated_prior_draws", "region_score", "region_threshold",
           "posterior_inside", "unconstrained_log_prior", "EPSILON", "MCMC_STEPS"]

#: Posterior mass left outside the truncation region (Deistler et al. 2022 use 1e-4).
EPSILON = 1e-4
#: Metropolis steps that spread the resampled draws over the truncated prior.
MCMC_STEPS = 30


def simulate_round(npe: Any, x: Any, num: int, sim_options: dict[str, Any]) -> Any:
    """A later round's ``num`` simulations: latents from the truncated prior (seeded by
    ``sim_options["seed"]``; with ``npe.sequential == "atomic"``, from ``npe``'s posterior
    given ``x`` itself), data from ``npe``'s model; the time goes to
    ``npe.timings["simulation"]``, the region's prior mass to ``npe.truncation``; in the
    second round, :func:`posterior_inside` of the new pairs to ``npe.truncation_inside``
    (only then: later estimators were trained on pairs cut by earlier regions, so they
    have learned the cut and would overstate the share).

    Example:
        >>> import torch, pyro, pyro.distributions as dist, flowinfer as fi
        >>> def sensor():
        ...     level = pyro.sample("level", dist.Uniform(0.0, 10.0))
        ...     pyro.sample("reading", dist.Normal(level, 0.3))
        >>> est = fi.NPE(sensor, "reading", embedding="mlp",
        ...              flow_options={"num_layers": 1, "hidden": (8,)})
        >>> _ = est.fit(num_simulations=300, epochs=2, seed=0, progress=False)
        >>> new = simulate_round(est, torch.tensor(4.0), 50, {"seed": 1, "progress": False})
        >>> len(new), bool(new.latents["level"].min() >= 0.0)
        (50, True)
    """
    from flowinfer.npe.simulate import simulate

    start = time.perf_counter()
    region: dict[str, float] = {}
    if npe.sequential == "atomic":
        with torch.random.fork_rng():
            torch.manual_seed(sim_options["seed"])
            proposal = npe.sample(num, x)
    else:
        proposal = truncated_prior_draws(npe, x, num, seed=sim_options["seed"],
                                         region=region)
        npe.truncation.append(region["prior_mass"])
    new = simulate(npe.model, npe.observed, num, latents=proposal, model_args=npe.model_args,
                   model_kwargs=npe.model_kwargs, info=npe.info, spec=npe._spec,
                   **sim_options)
    npe.timings["simulation"] += time.perf_counter() - start
    if region and npe.truncation_inside is None:  # once, with the prior-trained estimator
        npe.truncation_inside = posterior_inside(npe, x, region["threshold"], new.observed,
                                                 seed=sim_options["seed"])
    return new


@torch.no_grad()
def truncated_prior_draws(npe: Any, x: dict[str, Tensor], num: int, *, seed: int,
                          epsilon: float = EPSILON, oversample: int = 10,
                          mcmc_steps: int = MCMC_STEPS,
                          region: dict[str, float] | None = None) -> dict[str, Tensor]:
    """``num`` draws (constrained, ``{site: (num, *shape)}``) of the prior truncated to the
    region where ``npe``'s posterior-to-prior ratio given ``x`` is above its threshold
    (:func:`region_threshold`), which holds ``1 - epsilon`` of the posterior's mass.

    Args:
        npe: a trained :class:`~flowinfer.npe.estimator.NPE`.
        x: the observation (``{site: tensor}`` or a tensor).
        num: how many draws.
        seed: seeds the draws.
        epsilon: posterior mass outside the region.
        oversample: candidates drawn per returned draw.
        mcmc_steps: Metropolis steps per resampled draw (0: the resampled draws as they are).
        region: a dict that receives ``"prior_mass"``, the region's prior mass estimated
            from the candidates (``mean(inside * prior / q)``; bounded terms, since
            ``prior / q`` is bounded inside the region): near 1, truncation barely focuses;
            and ``"threshold"``, the :func:`region_threshold` used.
    """
    num = check_int(num, "num")
    mcmc_steps = check_int(mcmc_steps, "mcmc_steps", lowest=0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        threshold = region_threshold(npe, x, epsilon)
        u = npe.sample_unconstrained(num * oversample, x)
        log_q = npe.log_prob_unconstrained(u, x)
        log_prior_u = unconstrained_log_prior(npe, u)
        inside = _ratio(log_q, log_prior_u) >= threshold.to(log_q.dtype)
        u, log_q, log_prior_u = u[inside], log_q[inside], log_prior_u[inside]
        log_w = (log_prior_u - log_q).double()
        if region is not None:
            # Importance estimate of the prior mass inside, E_q[inside * prior / q]; a
            # mass, so at most 1 (the estimate's noise can pass 1 when q is broad).
            region["prior_mass"] = min(1.0, float(torch.nan_to_num(log_w.exp()).sum())
                                       / len(inside))
            region["threshold"] = float(threshold)
        ok = torch.isfinite(log_w)
        u, log_w = u[ok], log_w[ok]
        weights = torch.exp(log_w - log_w.max())
        idx = torch.multinomial(weights, num, replacement=True)
        u = _metropolis(npe, x, u[idx], (log_prior_u[ok])[idx], threshold, u, mcmc_steps)
        draws, _ = npe.info.to_constrained(u)
    return draws


def region_score(npe: Any, u: Tensor, x: Any) -> Tensor:
    """``log q(u | x) - log p(u)`` of unconstrained latents ``u`` ``(N, D)``: the
    posterior-to-prior log ratio that defines the truncation region (the same in any
    coordinates; ``-inf`` outside the prior's support)."""
    return _ratio(npe.log_prob_unconstrained(u, x), unconstrained_log_prior(npe, u))


def _ratio(log_q: Tensor, log_prior: Tensor) -> Tensor:
    # Outside the prior's support (or where either density fails) nothing is inside.
    score = log_q - log_prior
    return torch.where(torch.isfinite(log_prior) & ~torch.isnan(score), score,
                       torch.full_like(score, -math.inf))


@torch.no_grad()
def region_threshold(npe: Any, x: Any, epsilon: float = EPSILON) -> Tensor:
    """The :func:`region_score` at the edge of the truncation region: its epsilon-quantile
    over draws from ``npe``'s posterior given ``x`` (drawn with torch's global generator),
    so the region ``score >= threshold`` holds ``1 - epsilon`` of the posterior's mass.

    Example:
        >>> import torch, pyro, pyro.distributions as dist, flowinfer as fi
        >>> def model():
        ...     theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        ...     pyro.sample("x", dist.Normal(theta, 0.5))
        >>> npe = fi.NPE(model, "x", flow_options={"num_layers": 1, "hidden": (8,)})
        >>> _ = npe.fit(num_simulations=200, epochs=2, seed=0, progress=False)
        >>> x = torch.tensor(0.3)
        >>> bool(region_threshold(npe, x, 0.5) > region_threshold(npe, x, 0.01))
        True

    Raises:
        ValueError: ``epsilon`` outside (0, 1).
    """
    epsilon = check_number(epsilon, "epsilon", low=0.0, high=1.0, low_open=True,
                           high_open=True)
    probe = npe.sample_unconstrained(max(10_000, int(10 / epsilon) // 100), x)
    return torch.quantile(region_score(npe, probe, x).double(), epsilon)


@torch.no_grad()
def posterior_inside(npe: Any, x: Any, threshold: float, observed: dict[str, Tensor], *,
                     seed: int, pairs: int = 100, draws: int = 200) -> float:
    """The median, over the first ``pairs`` data sets ``x_i`` of ``observed``
    (``{site: (N, *shape)}``), of the share of ``npe``'s posterior given ``x_i`` inside the
    truncation region for ``x`` (``region_score(., x) >= threshold``), from ``draws`` draws
    each.

    Why it matters: with the truncated prior as proposal the likelihood loss teaches
    ``p(theta | x_i)`` cut to the region and renormalised. That is the posterior at ``x``,
    but a pair whose own posterior reaches past the region's edge teaches a cut density,
    which is harder to learn. Near 1, the region leaves the pairs' posteriors whole; in
    several dimensions most of a region's volume lies near its edge, and the median falls
    (10-D normal posteriors: 0.25-0.35 with the exact region), where the denser
    simulations can gain less than the cut densities cost
    (``benchmarks/npe_focus.py``, docs/npe.md "Sequential rounds").

    Example:
        >>> import torch, pyro, pyro.distributions as dist, flowinfer as fi
        >>> def gauge():
        ...     level = pyro.sample("level", dist.Uniform(0.0, 10.0))
        ...     pyro.sample("reading", dist.Normal(level, 0.3))
        >>> est = fi.NPE(gauge, "reading", embedding="mlp",
        ...              flow_options={"num_layers": 1, "hidden": (8,)})
        >>> _ = est.fit(num_simulations=300, epochs=2, seed=0, progress=False)
        >>> reading = torch.tensor(4.0)
        >>> edge = float(region_threshold(est, reading))
        >>> share = posterior_inside(est, reading, edge, {"reading": torch.tensor([4.0, 9.0])},
        ...                          seed=0)
        >>> 0.0 <= share <= 1.0
        True
    """
    draws = check_int(draws, "draws")
    n = min(check_int(pairs, "pairs"), next(iter(observed.values())).shape[0])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        shares = torch.stack([
            (region_score(npe, npe.sample_unconstrained(draws, {k: v[i] for k, v in
                                                                observed.items()}), x)
             >= threshold).double().mean() for i in range(n)])
    return float(shares.median())


def unconstrained_log_prior(npe: Any, u: Tensor) -> Tensor:
    """The prior log density of unconstrained latents ``u`` ``(N, D)`` (the Jacobian of
    the map to the constrained space included)."""
    theta, ladj = npe.info.to_constrained(u)
    return latent_log_prior(npe._spec_for_simulation(None), theta) + ladj


def _metropolis(npe: Any, x: Any, u: Tensor, log_prior: Tensor, threshold: Tensor,
                region_draws: Tensor, steps: int) -> Tensor:
    """``steps`` random-walk Metropolis steps of independent chains started at ``u``, whose
    target is the prior (in unconstrained coordinates) restricted to
    ``log q - log prior >= threshold``."""
    # The step shape needs a covariance, so at least two draws inside the region.
    if steps == 0 or region_draws.shape[0] < 2:
        return u
    dim = u.shape[-1]
    cov = torch.atleast_2d(torch.cov(region_draws.T.double()))
    cov = cov + 1e-9 * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(dim, dtype=cov.dtype)
    # 2.38 / sqrt(d) times the target's covariance is the classic random-walk scaling; the
    # draws inside the HDR stand in for the target's covariance.
    chol = torch.linalg.cholesky(cov).to(u.dtype) * (2.38 / dim**0.5)
    for _ in range(steps):
        proposal = u + torch.randn_like(u) @ chol.T
        lp = unconstrained_log_prior(npe, proposal)
        inside = _ratio(npe.log_prob_unconstrained(proposal, x), lp) >= threshold.to(u.dtype)
        # inside implies a finite prior density (see _ratio).
        accept = inside & (torch.rand_like(lp).log() < (lp - log_prior).to(lp.dtype))
        u = torch.where(accept[:, None], proposal, u)
        log_prior = torch.where(accept, lp, log_prior)
    return u
