"""Non-centred parameterisation of funnel-shaped models, for ``fi.infer``.

A latent site ``theta ~ Normal(mu, tau)`` whose scale ``tau`` is itself latent makes a funnel:
as ``tau`` shrinks, ``theta``'s density grows without bound, so the joint density has no
mode, a flow guide cannot follow the neck, and PSIS k-hat cannot see the mass it misses. The
non-centred form ``theta = mu + tau * theta_decentered`` with ``theta_decentered ~
Normal(0, 1)`` has the same posterior for ``theta`` and a density that is bounded. Pyro's
``LocScaleReparam(centered=0)`` does the rewriting; this module only decides where.

Only location-scale sites on the real line whose scale depends on another latent site are
rewritten: a site with a fixed scale has no funnel, and the rewriting would only rename it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer.reparam import LocScaleReparam

__all__ = ["funnel_sites", "noncentered"]


def _base(fn: Any) -> Any:
    # Independent and Expanded wrappers keep the loc-scale family underneath, and
    # LocScaleReparam unwraps them; a masked or transformed distribution it cannot rewrite.
    while isinstance(fn, torch.distributions.Independent | dist.ExpandedDistribution):
        fn = fn.base_dist
    return fn


def _is_real(support: Any) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def funnel_sites(model: Callable, values: dict[str, torch.Tensor], args: tuple,
                 kwargs: dict) -> dict[str, tuple[str, ...]]:
    """Latent location-scale sites on the real line whose scale depends on another latent.

    Args:
        model: a Pyro model.
        values: a value for every latent site (e.g. an autoguide's prototype trace).
        args, kwargs: the model's arguments.

    Returns:
        ``{site name: the family's shape parameters (e.g. a StudentT's "df")}`` in the
        model's order; empty when the model cannot be traced there.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     log_tau = pyro.sample("log_tau", dist.Normal(0.0, 3.0))
        ...     pyro.sample("x", dist.Normal(0.0, log_tau.exp()).expand([3]).to_event(1))
        >>> funnel_sites(model, {"log_tau": torch.tensor(0.0), "x": torch.zeros(3)}, (), {})
        {'x': ()}
    """
    leaves = {k: v.detach().clone().requires_grad_(v.is_floating_point())
              for k, v in values.items()}
    try:
        with torch.enable_grad(), poutine.block():
            trace = poutine.trace(poutine.condition(model, data=leaves)).get_trace(
                *args, **kwargs)
    except Exception:  # noqa: BLE001 - a model we cannot trace here is left as it is
        return {}
    names = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or name not in values:
            continue
        fn = _base(site["fn"])
        params = set(getattr(fn, "arg_constraints", {}))
        if not {"loc", "scale"} <= params or not _is_real(site["fn"].support):
            continue
        scale = getattr(fn, "scale", None)
        if isinstance(scale, torch.Tensor) and scale.requires_grad:
            names[name] = tuple(sorted(params - {"loc", "scale"}))
    return names


def noncentered(model: Callable, sites: dict[str, tuple[str, ...]]) -> Callable:
    """``model`` with each of ``sites`` rewritten as ``loc + scale * <site>_decentered``.

    The original site stays in every trace as a deterministic value (so its posterior is
    reported under its own name); ``<site>_decentered`` is the new latent site.

    Args:
        model: a Pyro model.
        sites: :func:`funnel_sites`'s answer (site name: shape parameters).

    Returns:
        The reparameterised model (``poutine.reparam`` with ``LocScaleReparam(0)``).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model():
        ...     tau = pyro.sample("tau", dist.HalfNormal(1.0))
        ...     pyro.sample("theta", dist.Normal(0.0, tau))
        >>> trace = pyro.poutine.trace(noncentered(model, {"theta": ()})).get_trace()
        >>> [n for n, s in trace.nodes.items() if s["type"] == "sample"]
        ['tau', 'theta_decentered', 'theta']

    References:
        Papaspiliopoulos, Roberts & Skold (2007), "A General Framework for the
        Parametrization of Hierarchical Models", Statistical Science. Gorinova, Moore &
        Hoffman (2020), "Automatic Reparameterisation of Probabilistic Programs", ICML.
    """
    config = {name: LocScaleReparam(centered=0.0, shape_params=list(shape))
              for name, shape in sites.items()}
    return poutine.reparam(model, config=config)
