"""Flows by name: ``register_flow``, ``build_flow`` and ``available_flows``."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.distributions import Transform

from flowinfer.checks import check_bool, check_int, check_shape
from flowinfer.flow import Flow

__all__ = ["FlowSpec", "register_flow", "build_flow", "available_flows", "get_flow_spec"]

Factory = Callable[..., Sequence[Transform | nn.Module]]


@dataclass(frozen=True)
class FlowSpec:
    """What the registry knows of a flow: its factory and what it supports."""

    name: str
    factory: Factory
    description: str
    has_inverse: bool = True
    supports_context: bool = True


_REGISTRY: dict[str, FlowSpec] = {}


def register_flow(
    name: str,
    *,
    description: str | None = None,
    has_inverse: bool = True,
    supports_context: bool = True,
    overwrite: bool = False,
) -> Callable[[Factory], Factory]:
    """Decorator registering ``factory(dim, context_dim=0, **hyper) -> list of transforms``.

    Args:
        name: the name users pass to :func:`build_flow`.
        description: one line for :func:`available_flows` (default: the docstring's first line).
        has_inverse: whether every transform has an analytic inverse (``log_prob`` of data).
        supports_context: whether the factory honours ``context_dim > 0``.
        overwrite: allow replacing an existing name.

    Example:
        >>> import torch, flowinfer as fi
        >>> @fi.register_flow("tiny-realnvp", overwrite=True)
        ... def tiny(dim, context_dim=0):
        ...     "Two affine couplings."
        ...     return [fi.transforms.affine_coupling(dim, hidden=(8,)),
        ...             fi.transforms.permutation(dim),
        ...             fi.transforms.affine_coupling(dim, hidden=(8,))]
        >>> fi.build_flow("tiny-realnvp", dim=2).log_prob(torch.zeros(2)).shape
        torch.Size([])
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a non-empty string, got {type(name).__name__} {name!r}")
    if not name:
        raise ValueError("name must be a non-empty string, got ''")
    check_bool(has_inverse, "has_inverse")
    check_bool(supports_context, "supports_context")
    check_bool(overwrite, "overwrite")

    def decorator(factory: Factory) -> Factory:
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"a flow named {name!r} is already registered (overwrite=True)")
        doc = description or (inspect.getdoc(factory) or name).strip().splitlines()[0]
        _REGISTRY[name] = FlowSpec(name, factory, doc, has_inverse, supports_context)
        return factory

    return decorator


def get_flow_spec(name: str) -> FlowSpec:
    """The :class:`FlowSpec` of a registered name; ``ValueError`` listing names otherwise."""
    if not isinstance(name, str):
        raise TypeError(
            f"flow name must be a string, one of {', '.join(sorted(_REGISTRY))}; got "
            f"{type(name).__name__}"
        )
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown flow {name!r}; available flows: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def available_flows() -> dict[str, str]:
    """Registered flow names with a one-line description each.

    Example:
        >>> import flowinfer as fi
        >>> "nsf" in fi.available_flows()
        True
    """
    return {name: spec.description for name, spec in sorted(_REGISTRY.items())}


def build_flow(
    name: str, dim: int | None = None, context_dim: int = 0, base: str | None = None,
    **hyper: Any
) -> Flow:
    """Build a registered flow.

    Args:
        name: a name from :func:`available_flows`.
        dim: event size of a vector flow. May be left out when ``shape`` is given.
        context_dim: size of the context vector (0 for an unconditional flow).
        base: ``"standard"`` N(0, I) base or ``"learnable"`` diagonal Gaussian. The default,
            ``None``, is ``"learnable"`` for flows on image tensors (``shape=(C, H, W)``),
            whose statistics depend on the position (a digit's corners are always blank,
            which translation-equivariant convolutions cannot express; it is Glow's learned
            prior, and it made MNIST samples at temperature 0.7 readable), ``"standard"``
            otherwise.
        **hyper: the flow's hyper-parameters (``num_layers``, ``hidden``, ``bins``, ...).
            ``shape`` is special: for factories that take it (``"glow"``), the flow's event
            shape, e.g. ``(C, H, W)`` for images; it is stored in ``config["hyper"]`` so a
            checkpoint rebuilds the same flow.

    Returns:
        A :class:`~flowinfer.flow.Flow`, whose ``config`` records how it was built.

    Example:
        >>> import flowinfer as fi
        >>> flow = fi.build_flow("nsf", dim=2, num_layers=2, hidden=(16,), bins=4)
        >>> flow.sample((3,)).shape
        torch.Size([3, 2])
        >>> glow = fi.build_flow("glow", shape=(1, 8, 8), levels=2, steps_per_level=1,
        ...                      hidden_channels=8)
        >>> glow.event_shape, glow.sample(2, temperature=0.7).shape
        (torch.Size([1, 8, 8]), torch.Size([2, 1, 8, 8]))
    """
    spec = get_flow_spec(name)
    shape = hyper.get("shape")
    if shape is not None:
        sizes = check_shape(shape, "shape")
        if dim is None:
            dim = math.prod(sizes)
        elif check_int(dim, "dim") != math.prod(sizes):
            raise ValueError(f"dim must equal the number of elements of shape {tuple(sizes)} "
                             f"({math.prod(sizes)}) when both are given, got dim={dim!r}")
    if dim is None:
        raise ValueError(f"dim is required to build flow {name!r} (or shape=... for flows on "
                         "tensors such as images)")
    check_int(dim, "dim")
    check_int(context_dim, "context_dim", 0)
    if context_dim and not spec.supports_context:
        conditional = sorted(n for n, s in _REGISTRY.items() if s.supports_context)
        raise ValueError(
            f"flow {name!r} does not support context (context_dim={context_dim}); "
            f"conditional flows: {', '.join(conditional)}"
        )
    accepted = inspect.signature(spec.factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(hyper) - set(accepted))
        if unknown:
            known = sorted(set(accepted) - {"dim", "context_dim"})
            raise ValueError(
                f"unknown hyper-parameter(s) {unknown} for flow {name!r}; accepted: {known}"
            )
    transforms = spec.factory(dim, context_dim=context_dim, **hyper)
    event = tuple(shape) if shape is not None and len(shape) > 1 else None
    if base is None:
        base = "learnable" if event is not None and len(event) == 3 else "standard"
    flow = Flow(transforms, dim=dim, context_dim=context_dim, base=base, shape=event)
    flow.config = {
        "name": name,
        "dim": dim,
        "context_dim": context_dim,
        "base": base,
        "hyper": dict(hyper),
    }
    return flow
