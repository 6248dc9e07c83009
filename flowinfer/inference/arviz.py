"""ArviZ ``InferenceData`` from a fitted guide.
"""


from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowinfer.inference.diagnostics import DiagnosticReport
from flowinfer.inference.groups import build_inference_data
from flowinfer.inference.importance import (
    importance_draws,
)

__all__ = ['to_inference_data']


def _to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy()


def to_inference_data(
    model: Callable, guide: Callable, *args: Any, num_samples: int = 2000,
    resample: bool = False, chunk_size: int = 1000, num_chains: int = 4,
    posterior_predictive: bool = False, **kwargs: Any
):
    """Guide draws as an ``arviz.InferenceData`` (constrained space).

    Groups: ``posterior`` (every latent and ``pyro.deterministic`` site, names and shapes
    kept), ``sample_stats`` (``log_importance_weight``, ``log p - log q`` of each draw),
    ``log_likelihood`` (per observed site and data point: ``az.loo``, ``az.waic``,
    ``az.compare``), ``observed_data``, and ``posterior_predictive`` on request
    (``az.plot_ppc``). ``attrs`` hold the ELBO, log-evidence estimate, k-hat and ESS. The
    independent draws are split into ``num_chains`` chains, so ArviZ's multi-chain
    diagnostics run without its single-chain warning.

    Args:
        model, guide, *args, **kwargs: as in :func:`diagnose`.
        num_samples: draws.
        resample: if True, resample the draws with PSIS-smoothed importance weights
            (sampling importance resampling), which corrects part of the guide's error when
            k-hat is below 0.7; the ``log_importance_weight`` kept is that of each chosen draw.
        chunk_size: draws evaluated at once.
        num_chains: chains the draws are split into (must divide ``num_samples``).
        posterior_predictive: also draw replicated data for every observed site.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyro.clear_param_store()
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        >>> idata = to_inference_data(model, AutoNormal(model), num_samples=100)
        >>> idata.posterior["z"].shape
        (4, 25, 3)

    References:
        Kumar et al. (2019), "ArviZ a unified library for exploratory analysis of Bayesian
        models in Python". Vehtari et al. (2024), "Pareto Smoothed Importance Sampling".
    """
    import arviz as az

    from flowinfer.checks import check_bool, check_int

    check_bool(resample, "resample")
    check_bool(posterior_predictive, "posterior_predictive")
    check_int(num_chains, "num_chains")
    if isinstance(num_samples, int) and not isinstance(num_samples, bool) and (
            num_samples >= 2 and num_samples % num_chains):
        raise ValueError(f"num_chains={num_chains} must divide num_samples={num_samples}")
    log_weights, posterior, observed = importance_draws(
        model, guide, *args, num_samples=num_samples, chunk_size=chunk_size, **kwargs
    )
    report = DiagnosticReport.from_log_weights(log_weights)
    if resample:
        smoothed, _ = az.psislw(_to_numpy(log_weights).astype(np.float64).copy())
        probs = torch.as_tensor(np.exp(smoothed - smoothed.max()))
        # torch's generator, so torch.manual_seed / pyro.set_rng_seed fix the resampling.
        idx = torch.multinomial(probs, num_samples, replacement=True)
        posterior = {k: v[idx.to(v.device)] for k, v in posterior.items()}
        log_weights = log_weights[idx.to(log_weights.device)]
    attrs = {
        "inference_library": "pyro + flowinfer",
        "guide": type(guide).__name__,
        "elbo": report.elbo,
        "elbo_se": report.elbo_se,
        "log_z": report.log_z,
        "log_z_se": report.log_z_se,
        "khat": report.khat,
        "ess": report.ess,
        "resampled": int(resample),
    }
    return build_inference_data(model, args, kwargs, posterior, num_chains,
                                sample_stats={"log_importance_weight": log_weights},
                                predictive=posterior_predictive, attrs=attrs)
