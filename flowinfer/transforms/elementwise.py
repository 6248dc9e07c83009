"""Learnable elementwise affine maps: a plain one and ActNorm (data-dependent start).

:class:`ActNorm` serves every event rank: per coordinate on vectors, per channel on images.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from pyro.distributions import constraints
from torch import Tensor, nn

from flowinfer.checks import check_int, check_shape, is_int
from flowinfer.transforms.base import Bijector

__all__ = ["ElementwiseAffine", "ActNorm", "DataDependentInit"]


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and will be removed in flowinfer 0.3; use {new}",
                  DeprecationWarning, stacklevel=3)


class ElementwiseAffine(Bijector):
    """``y = x * exp(log_scale) + loc`` with a learnable vector ``loc`` and ``log_scale``.

    Starts at the identity (both parameters zero).

    Args:
        dim: event size.

    Example:
        >>> t = ElementwiseAffine(3)
        >>> x = torch.randn(5, 3)
        >>> torch.equal(t(x), x)
        True
    """

    def __init__(self, dim: int) -> None:
        super().__init__(check_int(dim, "dim"))
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def _ladj(self, x: Tensor) -> Tensor:
        return self.log_scale.sum().expand(x.shape[:-1])

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return x * torch.exp(self.log_scale) + self.loc, self._ladj(x)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return (y - self.loc) * torch.exp(-self.log_scale), self._ladj(y)


class DataDependentInit(nn.Module):
    """An ``initialized`` flag for layers that set their parameters from the first data batch.

    The flag is a buffer, so checkpoints keep it (a loaded layer is not re-initialised); the
    hot path branches on its Python mirror ``_is_initialized``, because branching on a tensor
    breaks ``torch.compile`` graphs (and synchronises a GPU).
    """

    def _add_init_flag(self) -> None:
        self.register_buffer("initialized", torch.tensor(False))
        self._is_initialized = False

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._is_initialized = bool(self.initialized)

    @torch.no_grad()
    def _mark_initialized(self) -> None:
        self.initialized.fill_(True)
        self._is_initialized = True


class ActNorm(DataDependentInit, Bijector):
    """Activation normalisation: a per-channel affine map with data-dependent initialisation.

    ``y = x * exp(log_scale) + loc``. On vectors (``ActNorm(dim)``) every coordinate is a
    channel; on tensors (``ActNorm((C, H, W))``, any rank) the parameters are per channel
    (the first event dimension) and shared over the other positions, as in Glow.

    The first time data passes through the layer in the data -> base direction (``inverse``,
    as in ``log_prob`` of a batch during training, module in train mode), ``loc`` and
    ``log_scale`` are set so that this batch comes out with zero mean and unit variance per
    channel (over the batch and the non-channel positions). Samples travelling base -> data
    need no such start, so a forward call only marks the layer as initialised. The flag is a
    buffer: a loaded checkpoint is not re-initialised. ``log|det J|`` is the number of
    positions per channel times ``sum(log_scale)``.

    Args:
        event: the event size ``dim`` of a vector, or the event shape ``(C, ...)`` of a tensor
            (e.g. ``(C, H, W)`` for images).

    Example:
        >>> t = ActNorm(2)
        >>> data = 3.0 + 2.0 * torch.randn(1000, 2)
        >>> z = t.inv(data)
        >>> bool(z.mean(0).abs().max() < 1e-5)
        True
        >>> images = ActNorm((2, 4, 4))
        >>> z = images.inv(3.0 + 2.0 * torch.randn(64, 2, 4, 4))
        >>> bool(z.mean((0, 2, 3)).abs().max() < 1e-5), tuple(images.loc.shape)
        (True, (2, 1, 1))

    References:
        Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions".
    """

    def __init__(self, event: int | Sequence[int]) -> None:
        if is_int(event):
            shape: tuple[int, ...] = (check_int(event, "dim"),)
        else:
            shape = check_shape(event, "event")
        super().__init__(math.prod(shape))
        self.shape = self.out_shape = shape
        if len(shape) > 1:
            self.domain = self.codomain = constraints.independent(constraints.real, len(shape))
        # Per channel, broadcast over the other event positions: (C,) for vectors, (C, 1, 1)
        # for images (the parameter shapes of the former ActNorm / ActNorm2d, so their
        # checkpoints load unchanged).
        param = (shape[0],) + (1,) * (len(shape) - 1)
        self.loc = nn.Parameter(torch.zeros(param))
        self.log_scale = nn.Parameter(torch.zeros(param))
        self._positions = math.prod(shape[1:])
        self._add_init_flag()

    @property
    def channels(self) -> int:
        return self.shape[0]

    def _ladj(self, x: Tensor) -> Tensor:
        total = self.log_scale.sum()
        if self._positions > 1:
            total = self._positions * total
        return total.expand(x.shape[: x.dim() - len(self.shape)])

    @torch.no_grad()
    def _initialize(self, y: Tensor) -> None:
        k = len(self.shape)
        flat = y.detach().movedim(y.dim() - k, 0).reshape(self.channels, -1)
        if flat.shape[1] < 2:
            return
        self.loc.copy_(flat.mean(dim=1).reshape(self.loc.shape))
        self.log_scale.copy_(flat.std(dim=1).clamp_min(1e-6).log().reshape(self.loc.shape))
        self._mark_initialized()

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if not self._is_initialized and self.training:
            self._mark_initialized()
        return x * torch.exp(self.log_scale) + self.loc, self._ladj(x)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if not self._is_initialized and self.training:
            self._initialize(y)
        return (y - self.loc) * torch.exp(-self.log_scale), self._ladj(y)

    def extra_repr(self) -> str:
        return f"dim={self.dim}" if len(self.shape) == 1 else f"shape={self.shape}"


def elementwise_affine(dim: int) -> ElementwiseAffine:
    """Deprecated: use :class:`ElementwiseAffine`."""
    _deprecated("elementwise_affine(dim)", "ElementwiseAffine(dim)")
    return ElementwiseAffine(dim)


def actnorm(dim: int) -> ActNorm:
    """Deprecated: use :class:`ActNorm`."""
    _deprecated("actnorm(dim)", "ActNorm(dim)")
    return ActNorm(dim)
