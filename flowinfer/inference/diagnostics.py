"""Everything here draws ``x_i ~ q`` from a fitted guide and weighs each draw by
``log w_i = log p(x_i, data) - log q(x_i)`` (Pyro's ``vectorized_importance_weights``):

* the ELBO is ``mean(log w)``, with standard error ``sd(log w) / sqrt(n)``;
* ``log mean(w)`` estimates the log evidence ``log p(data)`` (an upper-tighter bound than
  the ELBO), with its delta-method standard error (``flowinfer.inference.evidence``);
* the Pareto k-hat of the weights' tail says whether these estimates, and the guide as a
  proposal, can be trusted (Yao et al. 2018): below 0.5 good, 0.5-0.7 usable, above 0.7 the
  guide misses posterior mass and the estimates are unreliable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from flowinfer.inference.evidence import ImportanceSummary, importance_summary, khat_reading
from flowinfer.inference.importance import (
    importance_draws,
)

__all__ = ['DiagnosticReport', 'diagnose']


@dataclass(frozen=True)
class DiagnosticReport:
    """The result of :func:`diagnose`.

    Attributes:
        elbo: Monte Carlo ELBO, ``mean(log w)``; ``elbo_se`` its standard error.
        log_z: importance-sampling estimate of the log evidence; ``log_z_se`` its standard
            error (delta method; meaningful only when ``khat`` is below 0.7).
        khat: PSIS Pareto k-hat of the importance weights; ``khat_reading`` in words.
        ess: importance-sampling effective sample size; ``ess_fraction`` as a share of
            ``num_samples``.
    """

    elbo: float
    elbo_se: float
    log_z: float
    log_z_se: float
    khat: float
    ess: float
    ess_fraction: float
    num_samples: int

    @property
    def khat_reading(self) -> str:
        return khat_reading(self.khat)

    @classmethod
    def from_log_weights(cls, log_weights: Tensor) -> DiagnosticReport:
        s: ImportanceSummary = importance_summary(log_weights)
        return cls(s.elbo, s.elbo_se, s.log_z, s.log_z_se, s.khat, s.ess, s.ess_fraction,
                   s.num_samples)

    def __str__(self) -> str:
        advice = {
            "good": "the guide is a good fit; importance-sampling estimates are reliable",
            "ok": "usable, but estimates converge slowly; more training or a richer flow helps",
            "unreliable": "the guide misses posterior mass: do not trust these estimates; "
            "train longer, use a richer flow, or run fi.neutra_mcmc",
            "undefined": "k-hat could not be computed",
        }[self.khat_reading]
        if self.khat_reading == "unreliable" and self.ess_fraction >= 0.5:
            # k-hat reads the tail of the weights, ESS their bulk: both high means the guide
            # matches the bulk but has lighter tails than the posterior somewhere (e.g. a
            # Gaussian-tailed guide on an exponentially tailed posterior), so the weights'
            # variance is infinite even though few draws carry large weight.
            advice = (
                "the weights' tail is heavy although the bulk matches (high ESS): the guide's "
                "tails are lighter than the posterior's somewhere, so tail-sensitive estimates "
                "(log Z, extreme quantiles) are unreliable; more draws sharpen k-hat, and "
                "fi.neutra_mcmc gives exact answers"
            )
        return (
            f"ELBO        {self.elbo:.3f} +- {self.elbo_se:.3f}\n"
            f"log Z (IS)  {self.log_z:.3f} +- {self.log_z_se:.3f}\n"
            f"PSIS k-hat  {self.khat:.2f} ({self.khat_reading}: {advice})\n"
            f"IS ESS      {self.ess:.0f} of {self.num_samples} "
            f"({100 * self.ess_fraction:.1f}%)"
        )


def diagnose(model: Callable, guide: Callable, *args: Any, num_samples: int = 2000,
             chunk_size: int = 1000, **kwargs: Any) -> DiagnosticReport:
    """ELBO, log-evidence estimate, PSIS k-hat and ESS of a fitted guide.

    Args:
        model: the Pyro model.
        guide: a fitted guide (``fi.AutoFlow`` or any Pyro autoguide).
        *args, **kwargs: the model's arguments.
        num_samples: draws from the guide (k-hat needs a few hundred to be stable).
        chunk_size: draws evaluated at once.

    Returns:
        A :class:`DiagnosticReport`; ``print(report)`` reads the k-hat for you.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyro.clear_param_store()
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> report = diagnose(model, AutoNormal(model), num_samples=500)
        >>> report.num_samples
        500

    References:
        Yao et al. (2018), "Yes, but Did It Work?: Evaluating Variational Inference".
        Vehtari et al. (2024), "Pareto Smoothed Importance Sampling".
    """
    log_weights, _, _ = importance_draws(model, guide, *args, num_samples=num_samples,
                                         chunk_size=chunk_size, **kwargs)
    return DiagnosticReport.from_log_weights(log_weights)
