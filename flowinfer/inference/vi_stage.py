"""Stage 4a of ``fi.infer``: the checks passed, so the draws are PSIS-resampled importance draws."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from flowinfer.inference.groups import build_inference_data
from flowinfer.inference.stages import CheckResult, Probe

__all__ = ["vi_result"]


def vi_result(probe: Probe, check: CheckResult):
    """``InferenceData`` of PSIS-resampled importance draws (route ``"vi"``)."""
    import arviz as az

    opts = probe.opts
    total = opts.draws_per_chain * opts.num_chains
    lw = check.log_weights.numpy()
    finite = np.isfinite(lw)
    smoothed = np.full_like(lw, -np.inf)
    if finite.sum() >= 5:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            smoothed[finite], _ = az.psislw(lw[finite].copy())
    else:
        smoothed = lw
    idx = _systematic(torch.as_tensor(smoothed), total)
    idx = idx[torch.randperm(total)]
    posterior = {k: v[idx] for k, v in check.posterior.items()}
    stats = {"log_importance_weight": torch.as_tensor(lw)[idx]}
    if len(check.mode_shares) > 1:
        stats["mode"] = check.component[idx]
    return build_inference_data(probe.model, probe.args, probe.kwargs, posterior,
                                opts.num_chains, sample_stats=stats,
                                predictive=opts.posterior_predictive)


def _systematic(log_weights: Tensor, n: int) -> Tensor:
    """Systematic resampling: ``n`` indices with counts within one of ``n * w_i``."""
    w = torch.softmax(log_weights.double(), 0)
    cum = torch.cumsum(w, 0)
    cum[-1] = 1.0
    points = (torch.rand(()) + torch.arange(n, dtype=torch.float64)) / n
    return torch.searchsorted(cum, points).clamp_max(w.numel() - 1)
