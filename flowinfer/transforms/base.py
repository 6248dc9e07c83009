"""Base classes shared by every flowinfer bijector, and the input checks they all use.

A bijector computes its output and ``log|det J|`` in one pass (``call_and_ladj`` and
``inverse_and_ladj``). Those public methods check the input once (shape, context) and call
the private ``_call_and_ladj`` / ``_inverse_and_ladj`` that subclasses implement. To serve
Pyro's ``TransformedDistribution`` (which asks for ``y`` first and
``log_abs_det_jacobian(x, y)`` later) without a second conditioner call, the last
``(x, y, ladj)`` triple is remembered. Unlike Pyro's own cache, the triple is keyed on the
version counters of the input and of every parameter and buffer, so after an optimizer step,
``load_state_dict`` or any in-place change the same input is recomputed: no stale values.
Parameters changed through ``.data`` bypass the version counters: call ``clear_cache()``
after such a change (optimizers, ``load_state_dict`` and ``torch.no_grad()`` updates are
tracked). The triple is dropped on pickling, so ``copy.deepcopy`` and ``torch.save`` work after a
forward call.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from torch import Tensor, nn
from torch.distributions import Transform

__all__ = [
    "Bijector",
    "ConditionalBijector",
    "ConditionedBijector",
    "check_context",
    "check_event",
]


def check_event(x: Tensor, event: int | Sequence[int], name: str) -> None:
    """Raise unless ``x`` is a tensor of shape ``(..., *event)``.

    Args:
        x: the tensor to check.
        event: a vector size ``dim`` (the last dimension) or an event shape such as
            ``(C, H, W)`` (the trailing dimensions).
        name: the argument's name, for the message.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: its trailing dimensions are not ``event``.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(event, int):
        if x.dim() == 0 or x.shape[-1] != event:
            raise ValueError(
                f"{name} must have shape (..., {event}) (trailing size = the flow's dim), "
                f"got shape {tuple(x.shape)}"
            )
        return
    k = len(event)
    if x.dim() < k or tuple(x.shape[x.dim() - k:]) != tuple(event):
        if k == 1:
            return check_event(x, event[0], name)
        dims = ", ".join(str(s) for s in event)
        raise ValueError(f"{name} must have shape (..., {dims}) (the event shape), got shape "
                         f"{tuple(x.shape)}")


def check_context(context: Tensor | None, context_dim: int, owner: str) -> Tensor | None:
    """Check ``context`` against what ``owner`` was built for (``context_dim``, 0: none).

    The one place that words "context given to something unconditional" and "context
    required": flows, bijectors and their wrappers all call it.

    Args:
        context: what the caller passed.
        context_dim: the owner's context size; 0 when it takes no context.
        owner: what was called, for the message (e.g. ``"flow"``, ``"transform"``).

    Returns:
        ``context`` (None for an unconditional owner).

    Raises:
        ValueError: context given to an unconditional owner, missing for a conditional one,
            or of the wrong trailing size.
        TypeError: context is not a tensor.
    """
    if context_dim == 0:
        if context is not None:
            raise ValueError(
                f"context was given to an unconditional {owner} (context_dim=0); build it "
                "with context_dim > 0 to condition it"
            )
        return None
    if context is None:
        raise ValueError(
            f"context is required: this {owner} was built with context_dim={context_dim}; "
            f"pass a tensor of shape (..., {context_dim}) (or call .condition(context))"
        )
    check_event(context, context_dim, "context")
    return context


def _state_key(module: nn.Module, x: Tensor) -> tuple:
    tensors = chain(module.parameters(), module.buffers())
    return (x._version, *((t._version, t.data_ptr()) for t in tensors))


class _FusedCallMixin:
    """``__call__``/``inv``/``log_abs_det_jacobian`` on top of the fused one-pass methods."""

    #: True when the inverse (data -> base) is the one-pass direction (MAF-like).
    fast_inverse: bool = False
    _stash: tuple | None = None

    def _fused_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _fused_inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _key_module(self) -> nn.Module:
        raise NotImplementedError

    def _lookup(self, x: Tensor | None = None, y: Tensor | None = None) -> tuple | None:
        stash = self._stash
        if stash is None:
            return None
        sx, sy, ladj, key = stash
        if x is not None and x is not sx:
            return None
        if y is not None and y is not sy:
            return None
        if _state_key(self._key_module(), sx) != key:
            return None
        return stash

    def _remember(self, x: Tensor, y: Tensor, ladj: Tensor) -> None:
        self.__dict__["_stash"] = (x, y, ladj, _state_key(self._key_module(), x))

    def __call__(self, x: Tensor) -> Tensor:
        # The forward map is always recomputed (no lookup by input), so the same tensor never
        # returns an output of old parameters; the stash only serves the matching inverse and
        # log-det requests that TransformedDistribution makes right after.
        y, ladj = self._fused_forward(x)
        self._remember(x, y, ladj)
        return y

    def _inv_call(self, y: Tensor) -> Tensor:
        hit = self._lookup(y=y)
        if hit is not None:
            return hit[0]
        x, ladj = self._fused_inverse(y)
        self._remember(x, y, ladj)
        return x

    def _call(self, x: Tensor) -> Tensor:
        return self._fused_forward(x)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        return self._fused_inverse(y)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        hit = self._lookup(x=x, y=y)
        if hit is not None:
            return hit[2]
        if self.fast_inverse:
            return self._fused_inverse(y)[1]
        return self._fused_forward(x)[1]

    def clear_cache(self) -> None:
        self.__dict__["_stash"] = None

    def with_cache(self, cache_size: int = 1) -> _FusedCallMixin:
        # The version-keyed stash is always safe, so every cache size maps to self.
        return self

    def __getstate__(self) -> dict:
        state = super().__getstate__()  # type: ignore[misc]
        state["_stash"] = None
        return state


class Bijector(_FusedCallMixin, TransformModule):
    """A learnable bijector (a Pyro ``TransformModule``) with fused one-pass methods.

    Subclasses implement :meth:`_call_and_ladj` and :meth:`_inverse_and_ladj`, which receive
    checked input; both return the log absolute determinant of the *forward* Jacobian,
    summed over the event dimensions. The public :meth:`call_and_ladj` and
    :meth:`inverse_and_ladj` do the checks. ``context_dim > 0`` marks a layer that needs a
    context vector: it is used through :class:`ConditionalBijector` and refuses to run
    without context.

    ``shape`` is the event shape of the forward input and ``out_shape`` that of the forward
    output (both ``(dim,)`` for a vector bijector; subclasses on tensors set them).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    #: Whether the inverse is analytic (``log_prob`` of arbitrary points works).
    has_inverse: bool = True

    def __init__(self, dim: int, context_dim: int = 0) -> None:
        super().__init__(cache_size=0)
        self.dim = dim
        self.context_dim = context_dim
        self.shape: tuple[int, ...] = (dim,)
        self.out_shape: tuple[int, ...] = (dim,)

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(y, log|det dy/dx|)`` for input ``x`` of shape ``(..., *shape)``."""
        x, context = self._check_input(x, context, "x")
        return self._call_and_ladj(x, context)

    def inverse_and_ladj(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return ``(x, log|det dy/dx|)``: the preimage of ``y`` and the forward log-det at it."""
        y, context = self._check_input(y, context, "y")
        return self._inverse_and_ladj(y, context)

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _check_input(
        self, x: Tensor, context: Tensor | None, name: str
    ) -> tuple[Tensor, Tensor | None]:
        # "x" enters the forward map, anything else the inverse.
        event = self.shape if name == "x" else self.out_shape
        check_event(x, event[0] if len(event) == 1 else event, name)
        if self.context_dim == 0 and context is None:
            return x, None
        context = check_context(context, self.context_dim, "transform")
        k = len(event)
        shape = torch.broadcast_shapes(x.shape[: x.dim() - k], context.shape[:-1])
        return x.expand(shape + x.shape[x.dim() - k:]), context.expand(shape + context.shape[-1:])

    def forward_shape(self, shape: Sequence[int]) -> torch.Size:
        shape = tuple(shape)
        return torch.Size(shape[: len(shape) - len(self.shape)] + self.out_shape)

    def inverse_shape(self, shape: Sequence[int]) -> torch.Size:
        shape = tuple(shape)
        return torch.Size(shape[: len(shape) - len(self.out_shape)] + self.shape)

    def _fused_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.call_and_ladj(x)

    def _fused_inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.inverse_and_ladj(y)

    def _key_module(self) -> nn.Module:
        return self

    def extra_repr(self) -> str:
        extra = f", context_dim={self.context_dim}" if self.context_dim else ""
        return f"dim={self.dim}{extra}"


class ConditionedBijector(_FusedCallMixin, Transform):
    """A :class:`Bijector` with its context fixed: what ``.condition(context)`` returns."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, layer: Bijector, context: Tensor) -> None:
        super().__init__(cache_size=0)
        self.layer = layer
        self.context = context
        self.fast_inverse = layer.fast_inverse

    def _fused_forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.layer.call_and_ladj(x, self.context)

    def _fused_inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.layer.inverse_and_ladj(y, self.context)

    def _key_module(self) -> nn.Module:
        return self.layer


class ConditionalBijector(ConditionalTransformModule):
    """A context-conditioned bijector (a Pyro ``ConditionalTransformModule``).

    Wraps a :class:`Bijector` built with ``context_dim > 0``; ``.condition(context)`` returns
    a transform usable in ``dist.TransformedDistribution`` (Pyro's
    ``ConditionalTransformedDistribution`` calls it for you).
    """

    def __init__(self, layer: Bijector) -> None:
        super().__init__()
        if layer.context_dim < 1:
            raise ValueError("ConditionalBijector needs a layer built with context_dim > 0")
        self.layer = layer

    @property
    def dim(self) -> int:
        return self.layer.dim

    @property
    def context_dim(self) -> int:
        return self.layer.context_dim

    @property
    def fast_inverse(self) -> bool:
        return self.layer.fast_inverse

    @property
    def has_inverse(self) -> bool:
        return self.layer.has_inverse

    def condition(self, context: Tensor) -> ConditionedBijector:
        check_event(context, self.layer.context_dim, "context")
        return ConditionedBijector(self.layer, context)

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.layer.call_and_ladj(x, context)

    def inverse_and_ladj(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        return self.layer.inverse_and_ladj(y, context)
