"""Parameter-free output maps that put a flow's samples where a target lives.

:class:`BoxMap` sends the real line onto a box (targets that are zero outside it);
:class:`StandardizeMap` shifts and scales (targets far from the origin or wide). Used as the
last layer of :func:`flowinfer.reverse.sampler_flow`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from flowinfer.transforms.base import Bijector

__all__ = ["BoxMap", "StandardizeMap", "as_vector"]


# ------------------------------------------------------------------------------ flows
def as_vector(value: Any, dim: int, name: str) -> Tensor:
    try:
        vec = torch.as_tensor(value, dtype=torch.get_default_dtype())
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a number or a sequence of {dim} numbers, "
                         f"got {value!r}") from None
    if vec.dim() > 1 or (vec.dim() == 1 and vec.numel() != dim):
        raise ValueError(f"{name} must be a number or a sequence of {dim} numbers, got {value!r}")
    if not torch.isfinite(vec).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return vec.expand(dim).clone()


class BoxMap(Bijector):
    """``y = low + (high - low) * Phi(x)``: the real line onto the box ``(low, high)``.

    ``Phi`` is the standard normal CDF, so a standard normal input becomes the uniform
    distribution on the box: a fresh flow ending in this map covers the whole box evenly, and
    a target that is flat up to the box's edges (U2-U4 along ``z1``) keeps Gaussian tails in
    the flow's own coordinates, where the splines' identity tails already match them.
    Parameter-free; the bounds are buffers, so ``.to(device)`` and ``.double()`` move them.

    Example:
        >>> t = BoxMap(torch.tensor([-4.0, -4.0]), torch.tensor([4.0, 4.0]))
        >>> t(torch.tensor([[0.0, 100.0]]))
        tensor([[0., 4.]])
    """

    def __init__(self, low: Tensor, high: Tensor) -> None:
        super().__init__(low.numel())
        if not bool((high > low).all()):
            raise ValueError(f"box: high must exceed low in every dimension, got "
                             f"low={low.tolist()}, high={high.tolist()}")
        self.register_buffer("low", low)
        self.register_buffer("width", high - low)

    def _ladj(self, x: Tensor) -> Tensor:
        # log(width * phi(x)) in closed form: finite even where Phi(x) rounds to 0 or 1.
        terms = self.width.log() - 0.5 * x.square() - 0.5 * math.log(2 * math.pi)
        return terms.sum(-1)

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.low + self.width * torch.special.ndtr(x), self._ladj(x)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = torch.special.ndtri((y - self.low) / self.width)
        return x, self._ladj(x)

    def extra_repr(self) -> str:
        return f"low={self.low.tolist()}, high={(self.low + self.width).tolist()}"


class StandardizeMap(Bijector):
    """``y = loc + scale * x`` with fixed ``loc`` and ``scale`` (buffers, not parameters).

    Lets the flow's layers work in standardised coordinates (where the splines' interval
    ``[-bound, bound]`` lies) for a target of another location and extent.

    Example:
        >>> t = StandardizeMap(torch.tensor([1.0]), torch.tensor([10.0]))
        >>> t(torch.tensor([[0.5]]))
        tensor([[6.]])
    """

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        super().__init__(loc.numel())
        if not bool((scale > 0).all()):
            raise ValueError(f"scale must be positive, got {scale.tolist()}")
        self.register_buffer("loc", loc)
        self.register_buffer("scale", scale)

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return self.loc + self.scale * x, self.scale.log().sum().expand(x.shape[:-1])

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return (y - self.loc) / self.scale, self.scale.log().sum().expand(y.shape[:-1])

    def extra_repr(self) -> str:
        return f"loc={self.loc.tolist()}, scale={self.scale.tolist()}"

