"""Checks that a latent site's support is fixed, so one bijection from unconstrained space fits.

NPE maps each latent site to unconstrained space with ``biject_to`` of the support seen on
the model's first plain run. A support whose bounds are random (``Uniform(0, a)`` with a
latent ``a``) would cap every draw at that run's bound, silently; these checks turn it into
an error, and tell a draw that merely sits on a bound (a Gamma draw that underflowed to 0,
which maps to minus infinity) from one beyond it.

Example:
    >>> import torch
    >>> from torch.distributions import constraints
    >>> [float(b) for b in support_bounds(constraints.interval(0.0, 2.0))]
    [0.0, 2.0]
    >>> draws_outside(constraints.positive, torch.tensor([1.0, 0.0, -1.0])).tolist()
    [False, False, True]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["support_bounds", "changed_bounds", "check_fixed_supports", "draws_outside"]


def support_bounds(constraint: Any) -> list[Tensor]:
    """The lower/upper bounds of ``constraint`` and of the constraints it wraps."""
    out = []
    while constraint is not None:
        out += [torch.as_tensor(getattr(constraint, a)) for a in ("lower_bound", "upper_bound")
                if hasattr(constraint, a)]
        constraint = getattr(constraint, "base_constraint", None)
    return out


def changed_bounds(name: str, trace: Any, others: list[Any]) -> Any:
    """The node of site ``name`` in the first trace of ``others`` whose support bounds differ
    from those in ``trace`` (None when every trace that has the site agrees)."""
    first = support_bounds(trace.nodes[name]["fn"].support)
    for other in others:
        node = other.nodes.get(name)
        if node is None:
            continue
        bounds = support_bounds(node["fn"].support)
        if len(bounds) != len(first) or not all(
                a.shape == b.shape and torch.equal(a, b)
                for a, b in zip(first, bounds, strict=True)):
            return node
    return None


def check_fixed_supports(latents: list[str], trace: Any, others: list[Any]) -> None:
    """Raise ``ValueError`` if a latent's support bounds in ``trace`` differ in ``others``."""
    for name in latents:
        node = changed_bounds(name, trace, others)
        if node is not None:
            raise ValueError(
                f"latent site {name!r} has a support that changes from run to run "
                f"({trace.nodes[name]['fn'].support} on one run, "
                f"{node['fn'].support} on another): NPE maps each latent to "
                "unconstrained space with one fixed bijection; reparametrise it, e.g. "
                "Uniform(0, a) as a * Uniform(0, 1)")


def draws_outside(support: Any, value: Tensor) -> Tensor:
    """Boolean ``(N,)``: draws ``(N, *shape)`` with a coordinate beyond ``support``'s bounds
    (a coordinate equal to a bound counts as inside)."""
    edge = torch.zeros(value.shape, dtype=torch.bool)
    for bound in support_bounds(support):
        edge |= value == bound
    base = support
    while hasattr(base, "base_constraint"):  # independent(...): check elementwise
        base = base.base_constraint
    ok = base.check(value)
    ok = (ok | edge) if ok.shape == value.shape else ok
    return ~ok.reshape(value.shape[0], -1).all(-1)
