"""Per-datapoint importance-weighted bounds (IWAE) for VAEs.
"""


from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import torch
from pyro import poutine
from torch import Tensor

from flowinfer.checks import check_callable, check_int

__all__ = ['ImportanceBounds', 'log_importance_weights', 'iwae_bound']


class ImportanceBounds(NamedTuple):
    """Per-datapoint bounds on ``log p(x)`` from the same ``K`` importance samples.

    Attributes:
        iwae: ``log (1/K) sum_k w_k``, the IWAE bound (tightens as ``K`` grows).
        elbo: ``(1/K) sum_k log w_k``, a ``K``-sample estimate of the ELBO.
        num_particles: ``K``.
    """

    iwae: Tensor
    elbo: Tensor
    num_particles: int


def log_importance_weights(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_particles: int = 1,
    max_plate_nesting: int = 1,
    **kwargs: Any,
) -> Tensor:
    """``log p(x, z_k) - log q(z_k | x)`` for ``K`` guide draws, one per data point.

    The guide and the model are run once each, vectorized over an extra particle plate to the
    left of the model's plates, so the result keeps the plate dimensions: shape
    ``(num_particles,) + plate_shape`` (e.g. ``(K, N)`` for one data plate of size ``N``).
    Unlike Pyro's ``vectorized_importance_weights``, which sums over the data plate (a joint
    weight for the whole batch), this keeps one weight per data point, which is what the
    per-datapoint IWAE bound needs. Every latent site must live inside the data plate (as in
    a VAE); sites outside it would be counted once per data point.

    Args:
        model, guide: Pyro callables taking ``*args, **kwargs``; no subsampling.
        num_particles: ``K``.
        max_plate_nesting: how many plates the model nests (``pyro.plate`` dims in use).

    Raises:
        TypeError: ``model`` or ``guide`` is not callable, a count not an integer.
        ValueError: a count below 1, or no sample site inside the particle plate.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> x = torch.randn(3)
        >>> def model(x):
        ...     with pyro.plate("data", 3):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     with pyro.plate("data", 3):
        ...         pyro.sample("z", dist.Normal(x / 2, 0.5 ** 0.5))  # the exact posterior
        >>> log_w = log_importance_weights(model, guide, x, num_particles=4)
        >>> log_w.shape
        torch.Size([4, 3])
        >>> torch.allclose(log_w, dist.Normal(0.0, 2 ** 0.5).log_prob(x).expand(4, 3))
        True

    References:
        Burda et al. (2016), "Importance Weighted Autoencoders".
    """
    check_callable(model, "model")
    check_callable(guide, "guide")
    num_particles = check_int(num_particles, "num_particles")
    max_plate_nesting = check_int(max_plate_nesting, "max_plate_nesting")

    def vectorized(fn: Callable) -> Callable:
        def wrapped(*a: Any, **k: Any) -> Any:
            with pyro.plate("_importance_particles", num_particles, dim=-1 - max_plate_nesting):
                return fn(*a, **k)

        return wrapped

    guide_trace = poutine.trace(vectorized(guide)).get_trace(*args, **kwargs)
    model_trace = poutine.trace(
        poutine.replay(vectorized(model), trace=guide_trace)
    ).get_trace(*args, **kwargs)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    log_w: Tensor | float = 0.0
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            log_w = log_w + site["log_prob"]
    for site in guide_trace.nodes.values():
        if site["type"] == "sample" and not site["is_observed"]:
            log_w = log_w - site["log_prob"]
    if not isinstance(log_w, Tensor) or log_w.dim() < max_plate_nesting + 1:
        raise ValueError(
            "the model has no sample site inside the particle plate; check that model and "
            f"guide declare their plates (max_plate_nesting={max_plate_nesting})"
        )
    return log_w


@torch.no_grad()
def iwae_bound(
    model: Callable,
    guide: Callable,
    *args: Any,
    num_particles: int = 1000,
    chunk_size: int = 100,
    max_plate_nesting: int = 1,
    **kwargs: Any,
) -> ImportanceBounds:
    """The IWAE bound and the ELBO per data point, from ``num_particles`` guide draws.

    ``log p(x) >= E[log (1/K) sum_k w_k] >= E[log w]`` (Burda et al. 2016), so for a VAE the
    IWAE value with large ``K`` is the usual estimate of test log-likelihood. Particles are
    drawn ``chunk_size`` at a time to bound memory.

    Args:
        model, guide: Pyro callables taking ``*args, **kwargs`` (see
            :func:`log_importance_weights`).
        num_particles: ``K``.
        chunk_size: particles per vectorized pass.
        max_plate_nesting: how many plates the model nests.

    Raises:
        TypeError: ``model`` or ``guide`` is not callable, a count not an integer.
        ValueError: a count below 1.

    Returns:
        :class:`ImportanceBounds` with tensors of the plate shape (e.g. ``(N,)``).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", 3):
        ...         z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     with pyro.plate("data", 3):
        ...         pyro.sample("z", dist.Normal(0.0, 1.0))    # the prior: a loose guide
        >>> bounds = iwae_bound(model, guide, torch.zeros(3), num_particles=200)
        >>> bool((bounds.iwae >= bounds.elbo).all())
        True

    References:
        Burda et al. (2016), "Importance Weighted Autoencoders".
    """
    check_callable(model, "model")
    check_callable(guide, "guide")
    num_particles = check_int(num_particles, "num_particles")
    chunk_size = check_int(chunk_size, "chunk_size")
    check_int(max_plate_nesting, "max_plate_nesting")
    chunks = []
    remaining = num_particles
    while remaining > 0:
        k = min(chunk_size, remaining)
        chunks.append(
            log_importance_weights(
                model, guide, *args, num_particles=k, max_plate_nesting=max_plate_nesting,
                **kwargs,
            )
        )
        remaining -= k
    log_w = torch.cat(chunks, dim=0)
    iwae = torch.logsumexp(log_w, dim=0) - math.log(num_particles)
    return ImportanceBounds(iwae=iwae, elbo=log_w.mean(dim=0), num_particles=num_particles)
