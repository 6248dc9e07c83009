"""The Flow container: a base distribution and a chain of bijectors, as a Pyro distribution."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import pyro.distributions.transforms as pyro_transforms
import torch
from pyro.distributions.conditional import ConditionalTransform
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms.planar import ConditionedPlanar
from pyro.distributions.transforms.radial import ConditionedRadial
from torch import Tensor, nn
from torch.distributions import Transform

from flowinfer.checks import check_choice, check_int, check_number, check_shape, is_int
from flowinfer.transforms.base import check_context, check_event

__all__ = ["Flow"]

_BASES = ("standard", "learnable")


class _StaticTransform(TransformModule):
    """Holds a parameter-free Pyro/torch transform inside the flow's ``nn.ModuleList``."""

    def __init__(self, transform: Transform) -> None:
        super().__init__(cache_size=0)
        self.transform = transform
        self.domain = transform.domain
        self.codomain = transform.codomain
        self.bijective = transform.bijective

    def _call(self, x: Tensor) -> Tensor:
        return self.transform(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return self.transform.inv(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.transform.log_abs_det_jacobian(x, y)


def _takes_context(layer: nn.Module) -> bool:
    return getattr(layer, "context_dim", 0) > 0


# Pyro's transforms whose `_inverse` only looks up its cache (it cannot invert new points).
_PYRO_WITHOUT_INVERSE = (
    ConditionedPlanar, ConditionedRadial,
    pyro_transforms.Sylvester, pyro_transforms.BlockAutoregressive,
    pyro_transforms.NeuralAutoregressive, pyro_transforms.Polynomial,
    pyro_transforms.ConditionalPlanar, pyro_transforms.ConditionalRadial,
    pyro_transforms.ConditionalNeuralAutoregressive,
)


def _layer_has_inverse(layer: nn.Module) -> bool:
    """Whether a layer of the chain has an analytic inverse (it says so, or implements one)."""
    if isinstance(layer, _StaticTransform):
        layer = layer.transform
    flag = getattr(layer, "has_inverse", None)
    if flag is not None:  # every flowinfer bijector says so itself
        return bool(flag)
    if isinstance(layer, _PYRO_WITHOUT_INVERSE):
        return False
    if isinstance(layer, Transform):
        # torch's base Transform._inverse raises NotImplementedError.
        return type(layer)._inverse is not Transform._inverse
    return True


def _sum_event(ladj: Tensor, y: Tensor, event_ndim: int = 1) -> Tensor:
    # Elementwise (event_dim 0) torch transforms return one term per coordinate.
    batch_ndim = y.dim() - event_ndim
    if ladj.dim() > batch_ndim:
        return ladj.sum(tuple(range(batch_ndim, ladj.dim())))
    return ladj


class Flow(nn.Module):
    """A normalizing flow: ``y = T_K(... T_1(z))`` with ``z`` from a Gaussian base.

    Calling the flow returns a fresh ``pyro.distributions.TransformedDistribution`` (so no
    state survives between optimizer steps); the methods below are one-pass shortcuts that
    skip Pyro's bookkeeping.

    Args:
        transforms: bijectors applied base -> data, in order. flowinfer bijectors, Pyro
            ``TransformModule``/``ConditionalTransformModule``s and parameter-free torch
            transforms are accepted.
        dim: event size of a vector flow (``event_shape == (dim,)``).
        context_dim: size of the context vector for conditional flows (0: unconditional).
        base: ``"standard"`` (fixed N(0, I)) or ``"learnable"`` (diagonal Gaussian whose mean
            and log standard deviation are parameters).
        shape: event shape of a flow on tensors, e.g. ``(C, H, W)`` for images (instead of
            ``dim``; ``dim`` is then its number of elements).

    Example:
        >>> from flowinfer.transforms import affine_coupling, permutation
        >>> flow = Flow([affine_coupling(2), permutation(2), affine_coupling(2)], dim=2)
        >>> x = flow.sample((5,))
        >>> flow.log_prob(x).shape
        torch.Size([5])
        >>> flow().event_shape
        torch.Size([2])
    """

    def __init__(
        self,
        transforms: Sequence[Transform | nn.Module],
        dim: int | None = None,
        context_dim: int = 0,
        base: str = "standard",
        shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.event_shape = _event_shape(dim, shape)
        self.dim = math.prod(self.event_shape)
        self.context_dim = check_int(context_dim, "context_dim", 0)
        check_choice(base, "base", _BASES)
        layers = []
        for i, t in enumerate(transforms):
            if isinstance(t, nn.Module):
                layers.append(t)
            elif isinstance(t, Transform):
                layers.append(_StaticTransform(t))
            else:
                raise TypeError(
                    f"transforms[{i}] must be a torch/Pyro transform, got {type(t).__name__}"
                )
        self.layers = nn.ModuleList(layers)
        self.base = base
        if base == "learnable":
            self.base_loc = nn.Parameter(torch.zeros(self.event_shape))
            self.base_log_scale = nn.Parameter(torch.zeros(self.event_shape))
        else:
            self.register_buffer("base_loc", torch.zeros(self.event_shape))
            self.register_buffer("base_log_scale", torch.zeros(self.event_shape))
        #: Registry name and hyper-parameters, set by ``build_flow`` (used by save/load).
        self.config: dict[str, Any] | None = None

    # ------------------------------------------------------------------ checks
    @property
    def is_conditional(self) -> bool:
        return self.context_dim > 0

    @property
    def has_inverse(self) -> bool:
        """Whether every layer has an analytic inverse, so ``log_prob`` of data works.

        Each layer says so itself (``layer.has_inverse`` on flowinfer bijectors; torch and
        Pyro transforms by whether they implement ``_inverse``). Flows without an inverse
        (Pyro's planar, radial, Sylvester, BNAF) score only their own samples.

        Example:
            >>> from flowinfer.registry import build_flow
            >>> build_flow("nsf", dim=2).has_inverse, build_flow("planar", dim=2).has_inverse
            (True, False)
        """
        return all(_layer_has_inverse(layer) for layer in self.layers)

    def _check_x(self, x: Tensor, name: str) -> None:
        event = self.event_shape
        check_event(x, self.dim if len(event) == 1 else tuple(event), name)
        self._check_dtype(x, name)

    def _check_dtype(self, x: Tensor, name: str) -> None:
        # Caught here because torch's own message ("mat1 and mat2 must have the same dtype")
        # names neither the argument nor the fix.
        expected = self.base_loc.dtype
        if x.dtype == expected:
            return
        fix = f"convert with {name}.to({expected})"
        if x.is_floating_point():
            fix += f" or move the flow with flow.to({x.dtype})"
        raise TypeError(
            f"{name} has dtype {x.dtype} but the flow's parameters are {expected}; {fix}"
        )

    @staticmethod
    def _sample_shape(sample_shape: int | Sequence[int] | torch.Size) -> torch.Size:
        # An int n means (n,), as in flow.sample(64, temperature=0.7).
        if is_int(sample_shape):
            sample_shape = (sample_shape,)
        try:
            sizes = tuple(sample_shape)
        except TypeError:
            raise TypeError(
                f"sample_shape must be an int or a sequence of ints, got "
                f"{type(sample_shape).__name__}"
            ) from None
        if not all(is_int(n) for n in sizes):
            raise TypeError(f"sample_shape must contain ints, got {sample_shape!r}")
        if any(n < 0 for n in sizes):
            raise ValueError(f"sample_shape must not contain negative sizes, got {sizes}")
        return torch.Size(sizes)

    def _check_context(self, context: Tensor | None) -> Tensor | None:
        context = check_context(context, self.context_dim, "flow")
        if context is not None:
            self._check_dtype(context, "context")
        return context

    # ------------------------------------------------------------------ pyro view
    def base_distribution(self, context: Tensor | None = None) -> dist.Distribution:
        """The base ``Normal(loc, scale)`` over the event shape, batched like ``context``."""
        base = self._base_normal().to_event(len(self.event_shape))
        if context is not None and context.dim() > 1:
            base = base.expand(context.shape[:-1])
        return base

    def transforms(self, context: Tensor | None = None) -> list[Transform]:
        """The chain of transforms, each conditioned on ``context`` where it takes one."""
        if context is None:
            return list(self.layers)
        return [
            t.condition(context) if isinstance(t, ConditionalTransform) else t
            for t in self.layers
        ]

    def forward(self, context: Tensor | None = None) -> dist.TransformedDistribution:
        """A fresh ``TransformedDistribution`` (conditioned on ``context`` if given)."""
        context = self._check_context(context)
        return dist.TransformedDistribution(
            self.base_distribution(context), self.transforms(context)
        )

    # ------------------------------------------------------------------ one-pass paths
    @staticmethod
    def _layer_forward(layer: nn.Module, x: Tensor, context: Tensor | None,
                       event_ndim: int = 1):
        if hasattr(layer, "call_and_ladj"):
            return layer.call_and_ladj(x, context if _takes_context(layer) else None)
        t = layer.condition(context) if isinstance(layer, ConditionalTransform) else layer
        y = t(x)
        return y, _sum_event(t.log_abs_det_jacobian(x, y), y, event_ndim)

    @staticmethod
    def _layer_inverse(layer: nn.Module, y: Tensor, context: Tensor | None,
                       event_ndim: int = 1):
        if hasattr(layer, "inverse_and_ladj"):
            return layer.inverse_and_ladj(y, context if _takes_context(layer) else None)
        t = layer.condition(context) if isinstance(layer, ConditionalTransform) else layer
        x = t.inv(y)
        return x, _sum_event(t.log_abs_det_jacobian(x, y), y, event_ndim)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Log density of points ``x`` of shape ``(..., *event_shape)`` (one pass for coupling)."""
        self._check_x(x, "x")
        context = self._check_context(context)
        total = 0.0
        event_ndim = len(self.event_shape)
        for layer in reversed(self.layers):
            x, ladj = self._layer_inverse(layer, x, context, event_ndim)
            total = total + ladj
        return self._base_log_prob(x) - total

    def _base_normal(self) -> dist.Normal:
        return dist.Normal(self.base_loc, torch.exp(self.base_log_scale))

    def _base_log_prob(self, z: Tensor) -> Tensor:
        # Summed by hand rather than through Independent.log_prob, which cannot reshape an
        # empty batch; broadcasting over any batch shape gives the same values.
        return self._base_normal().log_prob(z).sum(tuple(range(-len(self.event_shape), 0)))

    def _forward_pass(
        self, z: Tensor, context: Tensor | None, keep: bool = False
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        event_ndim = len(self.event_shape)
        total = torch.zeros(z.shape[: z.dim() - event_ndim], dtype=z.dtype, device=z.device)
        outputs = [z] if keep else []
        for layer in self.layers:
            z, ladj = self._layer_forward(layer, z, context, event_ndim)
            total = total + ladj
            if keep:
                outputs.append(z)
        return z, total, outputs

    def _base_sample(self, sample_shape: int | Sequence[int] | torch.Size,
                     context: Tensor | None):
        return self.base_distribution(context).rsample(self._sample_shape(sample_shape))

    def rsample(
        self, sample_shape: Sequence[int] | torch.Size = (), context: Tensor | None = None
    ) -> Tensor:
        """Reparameterised samples of shape ``sample_shape + batch_shape + event_shape``."""
        context = self._check_context(context)
        return self._forward_pass(self._base_sample(sample_shape, context), context)[0]

    @torch.no_grad()
    def sample(
        self,
        sample_shape: int | Sequence[int] | torch.Size = (),
        context: Tensor | None = None,
        temperature: float = 1.0,
    ) -> Tensor:
        """Samples without gradients; ``temperature`` scales the base standard deviation."""
        temperature = check_number(temperature, "temperature", low=0.0, low_open=True,
                                   high_open=True)
        context = self._check_context(context)
        z = self._base_sample(sample_shape, context)
        if temperature != 1.0:
            z = self.base_loc + temperature * (z - self.base_loc)
        return self._forward_pass(z, context)[0]

    def rsample_and_log_prob(
        self, sample_shape: Sequence[int] | torch.Size = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reparameterised samples and their log density in one forward pass (IAF, coupling)."""
        context = self._check_context(context)
        base = self.base_distribution(context)
        z = base.rsample(self._sample_shape(sample_shape))
        y, total, _ = self._forward_pass(z, context)
        return y, self._base_log_prob(z) - total

    @torch.no_grad()
    def sample_and_log_prob(
        self, sample_shape: Sequence[int] | torch.Size = (), context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Like :meth:`rsample_and_log_prob`, without gradients."""
        return self.rsample_and_log_prob(sample_shape, context)

    def transform_with_intermediates(
        self, z: Tensor, context: Tensor | None = None
    ) -> list[Tensor]:
        """Push base points ``z`` through the chain; returns ``[z, T_1(z), ..., y]``."""
        self._check_x(z, "z")
        context = self._check_context(context)
        return self._forward_pass(z, context, keep=True)[2]

    def extra_repr(self) -> str:
        extra = f", context_dim={self.context_dim}" if self.context_dim else ""
        size = f"dim={self.dim}" if len(self.event_shape) == 1 else \
            f"shape={tuple(self.event_shape)}"
        return f"{size}{extra}, base={self.base!r}"


def _event_shape(dim: int | None, shape: Sequence[int] | None) -> torch.Size:
    """The event shape from ``dim`` (vectors) or ``shape`` (tensors); both must agree."""
    if shape is None:
        if dim is None:
            raise ValueError("dim is required (or shape=... for a flow on tensors such as "
                             "images), got neither")
        return torch.Size([check_int(dim, "dim")])
    sizes = check_shape(shape, "shape")
    if dim is not None and check_int(dim, "dim") != math.prod(sizes):
        raise ValueError(f"dim must equal the number of elements of shape {sizes} "
                         f"({math.prod(sizes)}), got dim={dim}")
    return torch.Size(sizes)
