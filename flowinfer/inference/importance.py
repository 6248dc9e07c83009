"""Importance draws from a guide: ``log w = log p(x, data) - log q(x)`` per draw.
"""


from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pyro import poutine
from pyro.infer.importance import vectorized_importance_weights
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from flowinfer.checks import check_int
from flowinfer.inference.sites import is_deterministic

__all__ = ['importance_draws']


def _check_callables(model: Any, guide: Any) -> None:
    if not callable(model):
        raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
    if not callable(guide):
        raise TypeError(f"guide must be a callable Pyro guide, got {type(guide).__name__}")


def _single_traces(model: Callable, guide: Callable, args: tuple, kwargs: dict):
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    return model_trace, guide_trace


def _max_plate_nesting(*traces: Any) -> int:
    dims = [
        -frame.dim
        for trace in traces
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return max(dims, default=0)




def importance_draws(
    model: Callable, guide: Callable, *args: Any, num_samples: int = 1000,
    chunk_size: int = 1000, **kwargs: Any
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """Draws from ``guide`` with their log importance weights against ``model``.

    Args:
        model, guide: a Pyro model and a guide for it (any guide Pyro can vectorize over
            particles, e.g. every autoguide).
        *args, **kwargs: the model's arguments.
        num_samples: number of draws.
        chunk_size: draws evaluated at once (bounds memory for large data sets).

    Returns:
        ``(log_weights, posterior, observed)``: ``log_weights`` of shape ``(num_samples,)``;
        ``posterior`` maps every latent and ``pyro.deterministic`` site of the model to
        draws of shape ``(num_samples,) + site shape`` in the constrained space;
        ``observed`` maps observed sites to their data.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyro.clear_param_store()
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> lw, post, obs = importance_draws(model, AutoNormal(model), num_samples=10)
        >>> lw.shape, post["z"].shape
        (torch.Size([10]), torch.Size([10]))

    References:
        Yao et al. (2018), "Yes, but Did It Work?: Evaluating Variational Inference".
    """
    _check_callables(model, guide)
    check_int(num_samples, "num_samples", 2)
    check_int(chunk_size, "chunk_size")
    model_trace, guide_trace = _single_traces(model, guide, args, kwargs)
    nesting = _max_plate_nesting(model_trace, guide_trace)
    latent = {
        name: site["value"].shape
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample"
        and (not site["is_observed"] or is_deterministic(site))
        and not site["infer"].get("is_auxiliary", False)
        and not name.startswith("_")
        and name in _sample_names(model_trace)
    }
    observed = {
        name: site["value"].detach()
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and site["is_observed"] and not is_deterministic(site)
    }
    weights, draws = [], {name: [] for name in latent}
    done = 0
    with torch.no_grad():
        while done < num_samples:
            n = min(chunk_size, num_samples - done)
            lw, vec_model, _ = vectorized_importance_weights(
                model, guide, *args, num_samples=n, max_plate_nesting=nesting,
                normalized=False, **kwargs
            )
            weights.append(lw.reshape(n))
            for name, shape in latent.items():
                value = vec_model.nodes[name]["value"]
                if value.numel() != n * math.prod(shape):
                    raise ValueError(
                        f"site {name!r} has {value.numel()} values for {n} vectorized draws "
                        f"of shape {tuple(shape)}; the model does not vectorize over "
                        "particles (make it broadcast over leading batch dimensions)"
                    )
                draws[name].append(value.reshape((n,) + tuple(shape)))
            done += n
    posterior = {name: torch.cat(parts) for name, parts in draws.items()}
    return torch.cat(weights), posterior, observed


def _sample_names(trace: Any) -> set[str]:
    # Subsample sites of plates are "sample" nodes too; they are not random variables.
    return {
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }
