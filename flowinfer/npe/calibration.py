"""Calibration checks of an amortized posterior: SBC, expected coverage, predictive checks.

An amortized posterior can be confidently wrong, and nothing in its training loss says so.

- **Simulation-based calibration** (:func:`sbc`): for parameters drawn from the prior and
  data simulated from them, the rank of each true parameter among ``L`` posterior draws is
  uniform on ``0..L`` if the posterior is right on average. Each coordinate's ranks get a
  chi-square test of uniformity (``B`` bins); the verdict is "pass" when no coordinate's
  p-value is below ``alpha / D`` (Bonferroni over the ``D`` coordinates).
- **Expected coverage** (:func:`expected_coverage`): the highest-density credible region of
  level ``a`` should contain the true parameter a fraction ``a`` of the time; the
  highest-density level of each true parameter is the share of posterior draws with a
  higher estimated density. A curve below the diagonal means over-confidence.
- **Posterior predictive check** (:func:`posterior_predictive_check`): data simulated at
  posterior draws, with the observed data's quantile in them per coordinate.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> theta = torch.randn(500, 2, generator=g)
    >>> draws = torch.randn(99, 500, 2, generator=g)        # a correct posterior: the prior
    >>> result = sbc_from_draws(theta, draws)
    >>> result.passed
    True
    >>> result = sbc_from_draws(theta, 0.3 * draws)          # over-confident
    >>> result.passed
    False

References:
    Talts et al. (2018), "Validating Bayesian inference algorithms with simulation-based
    calibration", arXiv:1804.06788. Hermans et al. (2022), "A trust crisis in
    simulation-based inference? Your posterior approximations can be unfaithful", TMLR
    (expected coverage of highest-density regions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowinfer.checks import check_int, check_number

__all__ = ["SBCResult", "CoverageResult", "sbc", "sbc_from_draws", "expected_coverage",
           "posterior_predictive_check"]


# ------------------------------------------------------------------------------ SBC
@dataclass
class SBCResult:
    """Ranks and the uniformity test of simulation-based calibration.

    Attributes:
        ranks: ``(N, D)`` rank of each true coordinate among ``num_posterior_samples`` draws.
        num_posterior_samples: ``L``; ranks are in ``0..L``.
        names: a label per coordinate (``"site[i]"``).
        p_values: per coordinate, the chi-square uniformity test's p-value.
        alpha: the family-wise level; ``passed`` is ``min(p) >= alpha / D``.
        bins: histogram bins of the test and the plot.
    """

    ranks: np.ndarray
    num_posterior_samples: int
    names: list[str]
    p_values: np.ndarray
    alpha: float = 0.01
    bins: int = 20
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.p_values.min() >= self.alpha / len(self.p_values))

    @property
    def verdict(self) -> str:
        worst = int(np.argmin(self.p_values))
        state = "pass" if self.passed else "FAIL"
        return (f"SBC {state}: {len(self.ranks)} simulations, min p = "
                f"{self.p_values[worst]:.3g} ({self.names[worst]}), threshold "
                f"{self.alpha / len(self.p_values):.3g} (alpha {self.alpha}, Bonferroni)")

    def __repr__(self) -> str:
        return f"SBCResult({self.verdict})"

    def plot(self, path: Any = None, max_panels: int = 12):
        """Rank histograms per coordinate, with the 99% band of a uniform histogram."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from scipy import stats

        d = min(self.ranks.shape[1], max_panels)
        cols = min(d, 4)
        rows = -(-d // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
        n = len(self.ranks)
        lo, hi = stats.binom.ppf([0.005, 0.995], n, 1 / self.bins)
        edges = np.linspace(-0.5, self.num_posterior_samples + 0.5, self.bins + 1)
        for j in range(rows * cols):
            ax = axes[j // cols][j % cols]
            if j >= d:
                ax.axis("off")
                continue
            ax.axhspan(lo, hi, color="0.85", label="99% band (uniform)")
            ax.hist(self.ranks[:, j], bins=edges, color="C0", alpha=0.8)
            ax.set_title(f"{self.names[j]} (p={self.p_values[j]:.2g})", fontsize=9)
            ax.set_xlabel("rank")
        fig.suptitle(self.verdict.replace(", min p", ",\nmin p"), fontsize=8)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
            plt.close(fig)
        return fig


def _uniformity_p_values(ranks: np.ndarray, num: int, bins: int) -> np.ndarray:
    from scipy import stats

    edges = np.linspace(-0.5, num + 0.5, bins + 1)
    p = []
    for j in range(ranks.shape[1]):
        counts, _ = np.histogram(ranks[:, j], bins=edges)
        # Bins of ranks 0..L are not exactly equal when bins does not divide L + 1.
        widths = np.diff(np.floor(edges + 0.5))
        expected = len(ranks) * widths / widths.sum()
        p.append(stats.chisquare(counts, expected).pvalue)
    return np.asarray(p)


def sbc_from_draws(theta: Tensor, draws: Tensor, *, names: list[str] | None = None,
                   alpha: float = 0.01, bins: int | None = None) -> SBCResult:
    """SBC from true parameters ``(N, D)`` and posterior draws ``(L, N, D)`` for each.

    Ties (discrete or repeated values) are broken at random, as Talts et al. recommend.
    """
    if theta.dim() != 2 or draws.dim() != 3 or draws.shape[1:] != theta.shape:
        raise ValueError(f"theta must be (N, D) and draws (L, N, D); got "
                         f"{tuple(theta.shape)} and {tuple(draws.shape)}")
    alpha = check_number(alpha, "alpha", low=0.0, high=1.0, low_open=True, high_open=True)
    num = draws.shape[0]
    less = (draws < theta).sum(0)
    ties = (draws == theta).sum(0)
    if ties.any():
        g = torch.Generator().manual_seed(0)
        less = less + (torch.rand(ties.shape, generator=g) * (ties + 1)).floor().long()
    ranks = less.cpu().numpy()
    if bins is None:
        # About 20 expected per bin, at most 20 bins, and at most L + 1.
        bins = int(max(2, min(20, len(ranks) // 20, num + 1)))
    names = names or [f"theta[{j}]" for j in range(theta.shape[1])]
    return SBCResult(ranks, num, names, _uniformity_p_values(ranks, num, bins), alpha, bins)


def _coordinate_names(info: Any) -> list[str]:
    names = []
    for site in info.latent_names:
        size = int(np.prod(info.latent_shapes[site])) if info.latent_shapes[site] else 1
        names += [site] if size == 1 and not info.latent_shapes[site] else [
            f"{site}[{i}]" for i in range(size)]
    return names


def _flat(info: Any, latents: dict[str, Tensor]) -> Tensor:
    """``{site: (*lead, *shape)}`` -> ``(*lead, D)`` in the sites' order."""
    parts = []
    for k in info.latent_names:
        v = latents[k]
        nd = len(info.latent_shapes[k])
        parts.append(v.reshape(*v.shape[:v.dim() - nd], -1))
    return torch.cat(parts, -1)


@torch.no_grad()
def _posterior_batch(npe: Any, observed: dict[str, Tensor], num: int) -> Tensor:
    """``(num, N, latent_dim)`` unconstrained draws for each of N data sets at once."""
    xs = npe.scaling.data(npe._pack_x(observed))
    z = npe.flow.sample((num,), context=npe.embedding(xs))
    return npe.scaling.from_flow(z, xs)


def _checked_pairs(npe: Any, num_simulations: Any, num_posterior_samples: Any,
                   seed: Any) -> Any:
    # The checks both calibration measures make before they simulate.
    npe._check_fitted()
    check_int(num_simulations, "num_simulations", lowest=2)
    check_int(num_posterior_samples, "num_posterior_samples")
    return _simulate_pairs(npe, num_simulations, seed)


def _simulate_pairs(npe: Any, num_simulations: int, seed: int | None) -> Any:
    from flowinfer.npe.simulate import simulate

    return simulate(npe.model, npe.observed, num_simulations, model_args=npe.model_args,
                    model_kwargs=npe.model_kwargs, seed=seed, info=npe.info,
                    spec=npe._spec_for_simulation(None), progress=False)


def sbc(npe: Any, num_simulations: int = 1000, num_posterior_samples: int = 100, *,
        seed: int | None = None, alpha: float = 0.01, bins: int | None = None) -> SBCResult:
    """Simulation-based calibration of a trained NPE (fresh prior simulations).

    Args:
        npe: a trained :class:`~flowinfer.npe.estimator.NPE`.
        num_simulations: (parameter, data) pairs drawn from the prior predictive.
        num_posterior_samples: posterior draws per data set (``L``).
        seed: seeds the simulations and the draws.
        alpha: family-wise level of the uniformity test.
        bins: rank-histogram bins (None: about 20 expected counts per bin, at most 20).

    Returns:
        :class:`SBCResult` (``.passed``, ``.verdict``, ``.plot()``).
    """
    sims = _checked_pairs(npe, num_simulations, num_posterior_samples, seed)
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        u = _posterior_batch(npe, sims.observed, num_posterior_samples)
    draws, _ = npe.info.to_constrained(u)
    theta = _flat(npe.info, sims.latents).to(u.dtype)
    return sbc_from_draws(theta, _flat(npe.info, draws), names=_coordinate_names(npe.info),
                          alpha=alpha, bins=bins)


# ------------------------------------------------------------------------------ coverage
@dataclass
class CoverageResult:
    """Expected coverage of highest-density credible regions.

    Attributes:
        levels: nominal credibility levels (0..1).
        coverage: the fraction of true parameters inside the region of each level.
        hdr_levels: per simulation, the smallest level whose region holds the truth.
    """

    levels: np.ndarray
    coverage: np.ndarray
    hdr_levels: np.ndarray

    @property
    def max_gap(self) -> float:
        """Largest |coverage - level| (0 is perfect); negative gaps mean over-confidence."""
        return float(np.abs(self.coverage - self.levels).max())

    def plot(self, path: Any = None, ax: Any = None):
        """Coverage against the nominal level, with the diagonal and a 95% binomial band."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        n = len(self.hdr_levels)
        fig = None
        if ax is None:
            fig, ax = plt.subplots(figsize=(3.6, 3.4))
        band = 1.96 * np.sqrt(self.levels * (1 - self.levels) / n)
        ax.fill_between(self.levels, self.levels - band, self.levels + band, color="0.85",
                        label="95% band (calibrated)")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.plot(self.levels, self.coverage, "C1", lw=2, label="empirical")
        ax.set_xlabel("credibility level (HDR)")
        ax.set_ylabel("expected coverage")
        ax.legend(fontsize=8)
        if fig is not None:
            fig.tight_layout()
            if path is not None:
                fig.savefig(path, dpi=120)
                plt.close(fig)
        return fig if fig is not None else ax.figure


@torch.no_grad()
def expected_coverage(npe: Any, num_simulations: int = 500, num_posterior_samples: int = 500,
                      *, seed: int | None = None) -> CoverageResult:
    """Expected coverage of the estimated highest-density regions (fresh simulations).

    For each simulated pair, the truth's HDR level is the share of posterior draws whose
    estimated density exceeds the truth's; coverage at level ``a`` is the share of pairs
    with HDR level at most ``a``.
    """
    sims = _checked_pairs(npe, num_simulations, num_posterior_samples, seed)
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        xs = npe.scaling.data(npe._pack_x(sims.observed))
        context = npe.embedding(xs)
        z = npe.flow.sample((num_posterior_samples,), context=context)
        log_q_draws = npe.flow.log_prob(z, context.expand(num_posterior_samples,
                                                          *context.shape))
        u_true = npe.info.to_unconstrained(sims.latents).to(z.dtype)
        log_q_true = npe.flow.log_prob(npe.scaling.to_flow(u_true, xs), context)
    # Densities in the standardised unconstrained space: the same ordering of draws as in
    # any fixed space up to that space's Jacobian, which is what an HDR is defined in.
    hdr = (log_q_draws > log_q_true).double().mean(0).cpu().numpy()
    levels = np.linspace(0, 1, 101)
    coverage = np.array([(hdr <= a).mean() for a in levels])
    return CoverageResult(levels, coverage, hdr)


# ------------------------------------------------------------------------------ predictive
@dataclass
class PredictiveCheck:
    """Data simulated at posterior draws, and where the observation falls in them.

    Attributes:
        predictive: ``{observed site: (S, *shape)}`` simulated data.
        quantiles: ``{observed site: (*shape)}`` share of simulated values below the
            observed value (values near 0 or 1 flag a misfit).
    """

    predictive: dict[str, Tensor]
    quantiles: dict[str, Tensor]
    observed: dict[str, Tensor]

    def plot(self, path: Any = None):
        """Observed data against the 5-95% and 25-75% predictive bands, per site."""
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        names = list(self.predictive)
        fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            sims = self.predictive[name].reshape(self.predictive[name].shape[0], -1).double()
            q = torch.quantile(sims, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95],
                                                  dtype=torch.float64), dim=0).numpy()
            t = np.arange(sims.shape[1])
            ax.fill_between(t, q[0], q[4], color="C0", alpha=0.2, label="5-95%")
            ax.fill_between(t, q[1], q[3], color="C0", alpha=0.4, label="25-75%")
            ax.plot(t, q[2], "C0", lw=1)
            ax.plot(t, self.observed[name].reshape(-1).numpy(), "ko", ms=3, label="observed")
            ax.set_title(f"posterior predictive: {name}", fontsize=9)
            ax.set_xlabel("data coordinate")
            ax.legend(fontsize=7)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
            plt.close(fig)
        return fig


def posterior_predictive_check(npe: Any, x: Any, num_samples: int = 500, *,
                               seed: int | None = None) -> PredictiveCheck:
    """Simulate data at ``num_samples`` posterior draws given ``x``; compare with ``x``."""
    from flowinfer.npe.simulate import simulate

    num_samples = check_int(num_samples, "num_samples")
    observed = npe.info.check_observation(x)
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        draws = npe.sample(num_samples, x)
    sims = simulate(npe.model, npe.observed, num_samples, latents=draws,
                    model_args=npe.model_args, model_kwargs=npe.model_kwargs, seed=seed,
                    info=npe.info, spec=npe._spec_for_simulation(None), progress=False)
    quantiles = {k: (sims.observed[k].double() < observed[k].double()).double().mean(0)
                 for k in npe.observed}
    return PredictiveCheck(sims.observed, quantiles, observed)
