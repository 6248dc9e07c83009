"""The base of bijectors on image tensors ``(..., C, H, W)``, and helpers they share.

Every image bijector is a Pyro ``TransformModule`` whose domain and codomain have
``event_dim = 3`` and that follows the flowinfer bijector contract (fused one-pass
``call_and_ladj`` / ``inverse_and_ladj``, no stale cache, deep-copyable, starts at or near the
identity). As for every flowinfer bijector, *forward* is base -> data and ``ladj`` is always the
forward ``log|det J|``, summed over the three event dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pyro.distributions import constraints
from torch import Tensor, nn

from flowinfer.checks import check_shape
from flowinfer.transforms.base import Bijector

__all__ = ["ImageBijector", "check_image_shape"]

_IMAGE = constraints.independent(constraints.real, 3)


def check_image_shape(shape: object, name: str = "shape") -> tuple[int, int, int]:
    """Return ``shape`` as a ``(C, H, W)`` tuple of positive ints, or raise naming ``name``.

    Raises:
        TypeError: ``shape`` is not a sequence of integers.
        ValueError: it does not hold 3 positive sizes.
    """
    c, h, w = check_shape(shape, name, rank=3)
    return c, h, w


def batched(x: Tensor) -> tuple[Tensor, torch.Size]:
    """Flatten the batch dimensions to one, as ``Conv2d`` needs ``(N, C, H, W)``."""
    batch = x.shape[:-3]
    return x.reshape(-1, *x.shape[-3:]), batch


def event_sum(t: Tensor) -> Tensor:
    """Sum over the three event dimensions."""
    return t.sum(dim=(-3, -2, -1))


def zero_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Conv2d:
    """A convolution with zero weights and bias, keeping the height and width."""
    # A zero output layer makes the conditioned map start exactly at the identity.
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class ImageBijector(Bijector):
    """A :class:`~flowinfer.transforms.base.Bijector` on ``(..., C, H, W)`` tensors.

    ``shape`` is the forward input's event shape and ``out_shape`` the forward output's
    (equal except for :class:`~flowinfer.transforms.squeeze.Squeeze` and
    :class:`~flowinfer.transforms.squeeze.Unsqueeze`). Image bijectors take no context.
    """

    domain = _IMAGE
    codomain = _IMAGE

    def __init__(self, shape: Sequence[int], out_shape: Sequence[int] | None = None) -> None:
        shape = check_image_shape(shape)
        super().__init__(math.prod(shape))
        self.shape = shape
        self.out_shape = shape if out_shape is None else check_image_shape(out_shape)

    @property
    def channels(self) -> int:
        return self.shape[0]

    def _zero_ladj(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[:-3])

    def extra_repr(self) -> str:
        if self.out_shape != self.shape:
            return f"shape={self.shape}, out_shape={self.out_shape}"
        return f"shape={self.shape}"
