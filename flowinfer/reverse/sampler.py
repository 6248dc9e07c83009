"""``sampler_flow``: the flow reverse-KL fitting is tuned for, with a matching output map."""

from __future__ import annotations

from typing import Any

from flowinfer.flow import Flow
from flowinfer.registry import build_flow
from flowinfer.transforms.base import Bijector
from flowinfer.transforms.output import BoxMap, StandardizeMap
from flowinfer.transforms.output import as_vector as _as_vector

__all__ = ["sampler_flow"]


def sampler_flow(
    dim: int,
    *,
    flow: str = "nsf",
    box: tuple[Any, Any] | None = None,
    loc: Any = 0.0,
    scale: Any = 1.0,
    base: str = "standard",
    **hyper: Any,
) -> Flow:
    """The flow :func:`fit_reverse_kl` is tuned for, with an output map matching the target.

    A registered flow (default ``"nsf"``, hyper-parameters as in ``build_flow``) followed by
    one parameter-free map:

    * ``box=(low, high)``: :class:`BoxMap` onto the box, for targets that are zero outside it
      (U1-U4). Every sample then has finite target density, so no sample is wasted and the
      loss never sees ``log p~ = -inf``; a fresh flow is uniform on the box.
    * otherwise :class:`StandardizeMap` ``y = loc + scale * x``: a fresh flow is
      ``N(loc, diag(scale^2))``. Set ``scale`` to the target's extent (e.g. half the width of
      the region holding its modes) to start wide: the remedy for missed modes measured in
      ``docs/reverse_kl.md``.

    The map is part of the flow's layers but not of ``flow.config`` (which only describes
    the registered part): save the ``state_dict`` and rebuild with this function to reload.

    Args:
        dim: event size.
        flow: registered flow name.
        box: ``(low, high)``, scalars or ``dim``-vectors; excludes ``loc``/``scale``.
        loc, scale: scalars or ``dim``-vectors of the standardising map.
        base: ``"standard"`` or ``"learnable"`` base.
        **hyper: the flow's hyper-parameters (``num_layers``, ``hidden``, ``bins``, ...).

    Example:
        >>> flow = sampler_flow(2, box=(-4.0, 4.0), num_layers=2, hidden=(16,))
        >>> bool((flow.sample((1000,)).abs() < 4).all())
        True
    """
    if box is not None:
        if not (isinstance(box, tuple | list) and len(box) == 2):
            raise ValueError(f"box must be a pair (low, high), got {box!r}")
        if not (_is_default(loc, 0.0) and _is_default(scale, 1.0)):
            raise ValueError("give either box or loc/scale, not both")
        low, high = _as_vector(box[0], dim, "box"), _as_vector(box[1], dim, "box")
        output: Bijector = BoxMap(low, high)
    else:
        output = StandardizeMap(_as_vector(loc, dim, "loc"), _as_vector(scale, dim, "scale"))
    inner = build_flow(flow, dim, base=base, **hyper)
    return Flow([*inner.layers, output], dim=dim, base=base)


def _is_default(value: Any, default: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == default

