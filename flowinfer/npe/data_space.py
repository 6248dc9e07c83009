"""Observed data read on the unconstrained scale of its distribution's support.

A simulator whose data are positive (log-normal or gamma measurement noise, population
sizes from an ODE) or bounded (proportions) often spreads them over orders of magnitude:
z-scored as they are, most simulations sit in a sliver near zero while a few lie many
standard deviations out, and the embedding learns little. The posterior given the data is
unchanged by any bijection of the data, so NPE reads each observed site with a bounded
continuous support through ``biject_to(support).inv`` (the log for positive data, the logit
for an interval), as it already does for the latents. On a Lotka-Volterra model with
log-normal noise this raised the held-out log density by 2.6 nats at 1,000 simulations
(docs/npe.md "Defaults").

Sites are left as they are when discrete, unbounded, deterministic, when the transform would
change their shape (a simplex), or when their bounds change between runs (``Uniform(0, a)``
with a latent ``a``: one fixed map could not serve every simulation).

Example:
    >>> import pyro, pyro.distributions as dist
    >>> from pyro import poutine
    >>> def model():
    ...     rate = pyro.sample("rate", dist.LogNormal(0.0, 1.0))
    ...     pyro.sample("x", dist.Exponential(rate).expand([2]).to_event(1))
    >>> trace = poutine.trace(model).get_trace()
    >>> maps = data_transforms(trace, ["x"], [])
    >>> to_data_space(maps, {"x": torch.tensor([[1.0, 100.0]])})["x"]
    tensor([[0.0000, 4.6052]])

References:
    Bingham et al. (2019), "Pyro: Deep Universal Probabilistic Programming", JMLR
    (``biject_to``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.distributions import biject_to

from flowinfer.npe.supports import changed_bounds, support_bounds

__all__ = ["DATA_SPACES", "data_transforms", "to_data_space", "pack_data"]

#: ``fi.NPE(data_space=...)``: read bounded data unconstrained (default) or as simulated.
DATA_SPACES = ("unconstrained", "raw")


def data_transforms(trace: Any, names: list[str], others: list[Any]) -> dict[str, Any]:
    """``{observed site: transform to unconstrained data}`` for the sites of ``trace`` that
    have a bounded continuous support whose bounds are the same in the traces ``others``."""
    out = {}
    for name in names:
        site = trace.nodes[name]
        fn = site["fn"]
        if site["infer"].get("_deterministic") or getattr(fn.support, "is_discrete", False):
            continue
        if not support_bounds(fn.support) or changed_bounds(name, trace, others) is not None:
            continue
        try:
            forward = biject_to(fn.support)
        except NotImplementedError:
            continue
        shape = site["value"].shape
        if tuple(forward.inverse_shape(shape)) == tuple(shape):
            out[name] = forward.inv
    return out


def to_data_space(transforms: dict[str, Any], observed: dict[str, Tensor]) -> dict[str, Tensor]:
    """``observed`` with each site in ``transforms`` mapped to its unconstrained scale (a
    value on the support's bound becomes infinite: callers drop or reject it)."""
    if not transforms:
        return observed
    return {k: transforms[k](v) if k in transforms else v for k, v in observed.items()}


def pack_data(info: Any, observed: dict[str, Tensor], data_space: str = "unconstrained",
              observation: bool = False) -> Tensor:
    """The observed sites of ``info`` (a :class:`~flowinfer.npe.sites.ModelInfo`) as one
    tensor ``(N, *shape)`` (one site) or ``(N, data_dim)``, in ``data_space``.

    Raises:
        ValueError: with ``observation``, a value on or beyond its site's support bound.
    """
    names = info.observed_names
    if data_space == "unconstrained":
        mapped = to_data_space(info.data_transforms, observed)
        if observation:
            for k in info.data_transforms:
                if not torch.isfinite(mapped[k]).all():
                    raise ValueError(
                        f"the observation of site {k!r} has values on or outside the support "
                        f"{info.data_transforms[k].domain} of its distribution; NPE reads "
                        "this site on the unconstrained scale of that support (pass "
                        "data_space='raw' to fi.NPE to read it as it is)")
        observed = mapped
    if len(names) == 1:
        x = observed[names[0]]
    else:
        n = observed[names[0]].shape[0]
        x = torch.cat([observed[k].reshape(n, -1) for k in names], dim=-1)
    return x.to(torch.get_default_dtype())
