"""Amortized flow posteriors ``q(z | x)`` for VAEs, and per-datapoint importance bounds.

``AmortizedFlowPosterior`` is the IAF posterior of Kingma et al. (2016): the encoder gives a
diagonal Gaussian ``N(loc(x), scale(x))`` and a context vector ``h(x)``; a conditional flow
(inverse autoregressive by default, one pass to sample and to score its own samples) maps the
Gaussian draw to ``z``. It is a plain ``nn.Module`` returning a Pyro distribution, so it is
used as the guide's distribution for ``z`` inside the data plate.

``iwae_bound`` evaluates the importance-weighted bound of Burda et al. (2016) per data point
for any model/guide pair whose latent variables all live inside the data plate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch import Tensor, nn
from torch.nn import functional as F

from flowinfer.flow import Flow
from flowinfer.nn import check_positive_int
from flowinfer.registry import build_flow

__all__ = ["AmortizedFlowPosterior", "ImportanceBounds", "log_importance_weights", "iwae_bound"]

# softplus underflows to 0 for very negative inputs in float32; a Normal needs scale > 0.
_MIN_SCALE = 1e-6


class AmortizedFlowPosterior(nn.Module):
    """``q(z | x)``: a conditional flow on top of the encoder's diagonal Gaussian.

    ``z0 ~ N(loc, scale)``, ``z = T_K(... T_1(z0; h); h)`` with ``h`` the encoder's context.
    The flow starts at the identity, so before training ``q`` equals the encoder's Gaussian
    (a standard VAE posterior); training bends it where the true posterior is not Gaussian.

    Args:
        dim: latent dimension.
        context_dim: size of the encoder's context vector ``h`` (0: the flow is shared by all
            data points and only the Gaussian is amortized).
        flow: a registered flow name with context support (default ``"iaf"``: one pass for
            ``rsample`` and for ``log_prob`` of its own samples, which is all a guide needs).
        **hyper: hyper-parameters for ``fi.build_flow`` (``num_layers``, ``hidden``, ...).

    Attributes:
        num_features: ``2 * dim + context_dim``, the encoder output size that
            :meth:`from_features` splits into ``(loc, raw scale, context)``.

    Example:
        >>> import pyro
        >>> q = AmortizedFlowPosterior(dim=2, context_dim=4, num_layers=2, hidden=(16,))
        >>> encoder = torch.nn.Linear(6, q.num_features)
        >>> x = torch.randn(5, 6)
        >>> def guide(x):
        ...     pyro.module("encoder", encoder)
        ...     pyro.module("posterior", q)
        ...     with pyro.plate("data", x.shape[0]):
        ...         return pyro.sample("z", q.from_features(encoder(x)))
        >>> guide(x).shape
        torch.Size([5, 2])

    References:
        Kingma et al. (2016), "Improved Variational Inference with Inverse Autoregressive
        Flow". Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows".
    """

    def __init__(self, dim: int, context_dim: int = 0, flow: str = "iaf", **hyper: Any) -> None:
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.context_dim = check_positive_int(context_dim, "context_dim", allow_zero=True)
        if not isinstance(flow, str):
            raise TypeError(f"flow must be a registered flow name, got {type(flow).__name__}")
        self.flow: Flow = build_flow(flow, dim, context_dim=context_dim, **hyper)
        self.num_features = 2 * dim + context_dim

    def _check(self, loc: Tensor, scale: Tensor | float, context: Tensor | None) -> None:
        if not isinstance(loc, Tensor) or loc.dim() == 0 or loc.shape[-1] != self.dim:
            got = tuple(loc.shape) if isinstance(loc, Tensor) else type(loc).__name__
            raise ValueError(f"loc must be a tensor of shape (..., {self.dim}), got {got}")
        if isinstance(scale, Tensor):
            try:
                torch.broadcast_shapes(scale.shape, loc.shape)
            except RuntimeError:
                raise ValueError(
                    f"scale must broadcast with loc {tuple(loc.shape)}, got "
                    f"{tuple(scale.shape)}"
                ) from None
        if self.context_dim == 0:
            if context is not None:
                raise ValueError(
                    "context was given but this posterior was built with context_dim=0"
                )
            return
        if not isinstance(context, Tensor) or context.dim() == 0 or (
            context.shape[-1] != self.context_dim
        ):
            got = tuple(context.shape) if isinstance(context, Tensor) else context
            raise ValueError(
                f"context must be a tensor of shape (..., {self.context_dim}), got {got}"
            )

    def forward(
        self, loc: Tensor, scale: Tensor | float, context: Tensor | None = None
    ) -> dist.TransformedDistribution:
        """The posterior for a batch: ``batch_shape == loc.shape[:-1]``, event ``(dim,)``."""
        self._check(loc, scale, context)
        base = dist.Normal(loc, scale).to_event(1)
        return dist.TransformedDistribution(base, self.flow.transforms(context))

    def split_features(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Split encoder output ``(..., num_features)`` into ``(loc, scale, context)``.

        The scale is ``softplus(raw) + 1e-6``; the context is ``None`` when
        ``context_dim == 0``.
        """
        if not isinstance(features, Tensor) or features.dim() == 0 or (
            features.shape[-1] != self.num_features
        ):
            got = tuple(features.shape) if isinstance(features, Tensor) else features
            raise ValueError(
                f"features must be a tensor of shape (..., {self.num_features}) "
                f"(2 * dim + context_dim), got {got}"
            )
        d = self.dim
        loc, raw, context = features[..., :d], features[..., d : 2 * d], features[..., 2 * d :]
        scale = F.softplus(raw) + _MIN_SCALE
        return loc, scale, (context if self.context_dim else None)

    def from_features(self, features: Tensor) -> dist.TransformedDistribution:
        """The posterior from one encoder output of size :attr:`num_features`."""
        return self(*self.split_features(features))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}"


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
    check_positive_int(num_particles, "num_particles")
    check_positive_int(max_plate_nesting, "max_plate_nesting")

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
    check_positive_int(num_particles, "num_particles")
    check_positive_int(chunk_size, "chunk_size")
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
