"""Importance-sampling summaries: log-evidence with its standard error, ESS and PSIS k-hat.

Given log importance weights ``log w_i = log p~(x_i) - log q(x_i)`` for ``x_i ~ q``:

* ``log Z ~= log mean(w)`` (log-mean-exp); its standard error follows from the delta method,
  ``se(log Z) = sd(w) / (sqrt(n) * mean(w))``, computed on the max-shifted weights;
* the effective sample size ``(sum w)^2 / sum w^2`` (Kong 1992), also as a fraction of ``n``;
* the Pareto k-hat of the weights' upper tail (Vehtari et al. 2024; read with Yao et al. 2018:
  below 0.5 good, 0.5-0.7 usable, above 0.7 the estimates are unreliable), from ArviZ's
  ``psislw``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["ImportanceSummary", "importance_summary", "elbo_estimate", "khat_reading",
           "khat_standard_error",
           "psis_khat"]


@dataclass(frozen=True)
class ImportanceSummary:
    """Summary of a set of log importance weights (see module docstring)."""

    log_z: float
    log_z_se: float
    ess: float
    ess_fraction: float
    khat: float
    num_samples: int
    elbo: float = math.nan
    elbo_se: float = math.nan

    @property
    def khat_reading(self) -> str:
        return khat_reading(self.khat)

    def __str__(self) -> str:
        return (
            f"log Z = {self.log_z:.4f} +- {self.log_z_se:.4f} (n={self.num_samples}), "
            f"ESS = {self.ess:.0f} ({100 * self.ess_fraction:.1f}%), "
            f"k-hat = {self.khat:.2f} ({self.khat_reading})"
        )


def khat_reading(khat: float) -> str:
    """Plain-words reading of a Pareto k-hat value (Yao et al. 2018 thresholds)."""
    if math.isnan(khat):
        return "undefined"
    if khat < 0.5:
        return "good"
    if khat < 0.7:
        return "ok"
    return "unreliable"


def psis_khat(log_weights: Tensor | np.ndarray) -> float:
    """Pareto-smoothed importance sampling k-hat of ``log_weights`` (via ``arviz.psislw``)."""
    import arviz as az

    lw = _as_numpy(log_weights)
    with warnings.catch_warnings():
        # ArviZ warns about k-hat > 0.7 itself; callers report it in their own words.
        warnings.simplefilter("ignore")
        _, khat = az.psislw(lw.copy())
    return float(np.asarray(khat))


def khat_standard_error(khat: float, n: int) -> float:
    """Standard error of PSIS k-hat from ``n`` draws: ``(1 + k) / sqrt(M)``.

    ``M = min(n / 5, 3 sqrt(n))`` is the tail PSIS fits its generalised Pareto to, and
    ``(1 + k)^2 / M`` the asymptotic variance of the shape estimate.

    Example:
        >>> round(khat_standard_error(0.6, 4000), 3)
        0.116

    References:
        Vehtari et al. (2024), "Pareto Smoothed Importance Sampling", JMLR. Zhang & Stephens
        (2009), "A New and Efficient Estimation Method for the Generalized Pareto
        Distribution", Technometrics.
    """
    tail = min(n / 5, 3 * math.sqrt(n))
    if tail < 1 or not math.isfinite(khat):
        return math.inf
    return (1 + max(khat, 0.0)) / math.sqrt(tail)


def elbo_estimate(log_weights: Tensor | np.ndarray) -> tuple[float, float]:
    """The ELBO ``mean(log w)`` and its standard error, from log importance weights.

    A draw with ``log w = -inf`` (zero target density) makes the ELBO ``-inf``; the standard
    error is then that of the finite weights.

    Example:
        >>> elbo_estimate(torch.tensor([-1.0, -3.0]))
        (-2.0, 1.0)
    """
    lw = _as_numpy(log_weights).astype(np.float64)
    finite = lw[np.isfinite(lw)]
    elbo = float(finite.mean()) if finite.size == lw.size and lw.size else -math.inf
    se = float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else math.nan
    return elbo, se


def importance_summary(log_weights: Tensor | np.ndarray) -> ImportanceSummary:
    """Summarise 1-D log importance weights.

    Args:
        log_weights: ``log p~(x) - log q(x)`` for draws ``x ~ q``; non-finite entries of
            ``-inf`` (zero weight) are allowed, NaN and ``+inf`` are not.

    Example:
        >>> lw = torch.zeros(1000)          # q equals p~, Z = 1
        >>> s = importance_summary(lw)
        >>> round(s.log_z, 6), s.ess_fraction
        (0.0, 1.0)
    """
    lw = _as_numpy(log_weights).astype(np.float64)
    if lw.ndim != 1 or lw.size < 2:
        raise ValueError(f"log_weights must be 1-D with at least 2 entries, got shape {lw.shape}")
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise ValueError("log_weights contains NaN or +inf (the target or flow gave bad values)")
    n = lw.size
    top = lw.max()
    if not np.isfinite(top):
        raise ValueError("every log weight is -inf: the flow's samples all have zero target mass")
    w = np.exp(lw - top)
    mean_w = w.mean()
    log_z = float(top + np.log(mean_w))
    log_z_se = float(w.std(ddof=1) / (math.sqrt(n) * mean_w))
    ess = float(w.sum() ** 2 / (w**2).sum())
    finite = lw[np.isfinite(lw)]
    if finite.size >= 5 and np.ptp(finite) <= 1e-6 * max(1.0, abs(top)):
        # Constant weights (q equals the target up to rounding): bounded weights mean
        # k <= 0, but the Pareto fit to rounding noise is meaningless (ArviZ returns inf).
        khat = -math.inf
    else:
        khat = psis_khat(finite) if finite.size >= 5 else math.nan
    elbo, elbo_se = elbo_estimate(lw)
    return ImportanceSummary(log_z, log_z_se, ess, ess / n, khat, n, elbo, elbo_se)


def _as_numpy(x: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().to("cpu", torch.float64).numpy().reshape(-1)
    return np.asarray(x, dtype=np.float64).reshape(-1)
