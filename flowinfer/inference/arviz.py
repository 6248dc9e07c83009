"""ArviZ ``InferenceData`` from a fitted guide.
"""


from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowinfer.inference.diagnostics import DiagnosticReport
from flowinfer.inference.importance import (
    importance_draws,
)

__all__ = ['to_inference_data']


def _to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy()


def to_inference_data(
    model: Callable, guide: Callable, *args: Any, num_samples: int = 2000,
    resample: bool = False, chunk_size: int = 1000, **kwargs: Any
):
    """Guide draws as an ``arviz.InferenceData`` (one chain, constrained space).

    Groups: ``posterior`` (every latent and ``pyro.deterministic`` site, names and shapes
    kept), ``sample_stats`` (``log_importance_weight``, ``log p - log q`` of each draw) and
    ``observed_data``. ``attrs`` hold the ELBO, log-evidence estimate, k-hat and ESS.

    Args:
        model, guide, *args, **kwargs: as in :func:`diagnose`.
        num_samples: draws.
        resample: if True, resample the draws with PSIS-smoothed importance weights
            (sampling importance resampling), which corrects part of the guide's error when
            k-hat is below 0.7; the ``log_importance_weight`` kept is that of each chosen draw.
        chunk_size: draws evaluated at once.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyro.clear_param_store()
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        >>> idata = to_inference_data(model, AutoNormal(model), num_samples=100)
        >>> idata.posterior["z"].shape
        (1, 100, 3)

    References:
        Kumar et al. (2019), "ArviZ a unified library for exploratory analysis of Bayesian
        models in Python". Vehtari et al. (2024), "Pareto Smoothed Importance Sampling".
    """
    import arviz as az

    if not isinstance(resample, bool):
        raise TypeError(f"resample must be a bool, got {type(resample).__name__}")
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
    return az.from_dict(
        posterior={k: _to_numpy(v)[None] for k, v in posterior.items()},
        sample_stats={"log_importance_weight": _to_numpy(log_weights)[None]},
        observed_data={k: _to_numpy(v) for k, v in observed.items()},
        attrs=attrs,
    )
