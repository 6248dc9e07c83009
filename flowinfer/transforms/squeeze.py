"""Space-to-depth and back: :class:`Squeeze` ``(C, H, W) -> (4C, H/2, W/2)`` and its inverse.

References:
    Dinh et al. (2017), "Density estimation using Real NVP", ICLR.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from flowinfer.transforms.image_base import ImageBijector, check_image_shape

__all__ = ["Squeeze", "Unsqueeze"]


def _space_to_depth(x: Tensor) -> Tensor:
    *batch, c, h, w = x.shape
    x = x.reshape(*batch, c, h // 2, 2, w // 2, 2)
    n = len(batch)
    # Channel order (c, row offset, column offset): each 2x2 patch becomes 4 channels.
    x = x.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)
    return x.reshape(*batch, 4 * c, h // 2, w // 2)


def _depth_to_space(y: Tensor) -> Tensor:
    *batch, c4, h, w = y.shape
    c = c4 // 4
    n = len(batch)
    y = y.reshape(*batch, c, 2, 2, h, w)
    y = y.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)
    return y.reshape(*batch, c, 2 * h, 2 * w)


class Squeeze(ImageBijector):
    """Space-to-depth: each 2x2 patch of a channel becomes 4 channels.

    Maps ``(C, H, W)`` to ``(4C, H/2, W/2)``; a permutation of the entries, so
    ``log|det J| = 0``. :class:`Unsqueeze` is its inverse.

    Args:
        shape: input event shape ``(C, H, W)``, with ``H`` and ``W`` even.

    Example:
        >>> import torch
        >>> t = Squeeze((1, 4, 4))
        >>> x = torch.arange(16.0).reshape(1, 4, 4)
        >>> t(x).shape
        torch.Size([4, 2, 2])
        >>> torch.equal(t.inv(t(x)), x)
        True

    References:
        Dinh et al. (2017), "Density estimation using Real NVP", ICLR.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        c, h, w = check_image_shape(shape)
        if h % 2 or w % 2:
            raise ValueError(f"shape must have even height and width to squeeze, got {shape!r}")
        super().__init__((c, h, w), (4 * c, h // 2, w // 2))

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return _space_to_depth(x), self._zero_ladj(x)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return _depth_to_space(y), self._zero_ladj(y)


class Unsqueeze(ImageBijector):
    """Depth-to-space, the inverse of :class:`Squeeze`: ``(4C, H, W) -> (C, 2H, 2W)``.

    Args:
        shape: input event shape ``(C, H, W)`` with ``C`` divisible by 4.

    Example:
        >>> import torch
        >>> Unsqueeze((4, 2, 2))(torch.zeros(3, 4, 2, 2)).shape
        torch.Size([3, 1, 4, 4])

    References:
        Dinh et al. (2017), "Density estimation using Real NVP", ICLR.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        c, h, w = check_image_shape(shape)
        if c % 4:
            raise ValueError(f"shape must have a channel count divisible by 4 to unsqueeze, "
                             f"got {shape!r}")
        super().__init__((c, h, w), (c // 4, 2 * h, 2 * w))

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return _depth_to_space(x), self._zero_ladj(x)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        return _space_to_depth(y), self._zero_ladj(y)
