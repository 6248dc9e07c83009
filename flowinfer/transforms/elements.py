"""Element transforms: monotone scalar maps ``h(z; params)`` applied per dimension.

Coupling and autoregressive layers share these. Each maps all-zero parameters to the identity,
so a layer whose conditioner outputs zeros is the identity map.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flowinfer.splines import rational_quadratic_spline_from_params, spline_params_per_dim

__all__ = ["AffineElement", "SplineElement", "make_element"]


class AffineElement(nn.Module):
    """``h(z) = z * exp(s) + t`` with ``s`` softly clamped to ``(-bound, bound)``.

    The soft clamp ``bound * tanh(raw / bound)`` keeps single-layer scales within
    ``exp(+-bound)``, which prevents the overflow that unbounded ``exp`` causes early in
    training, while staying smooth (and equal to ``raw`` near zero).
    """

    num_params = 2

    def __init__(self, log_scale_bound: float = 5.0) -> None:
        super().__init__()
        if not (isinstance(log_scale_bound, int | float) and log_scale_bound > 0):
            raise ValueError(f"log_scale_bound must be a positive number, got {log_scale_bound!r}")
        self.log_scale_bound = float(log_scale_bound)

    def _shift_and_log_scale(self, params: Tensor) -> tuple[Tensor, Tensor]:
        shift, raw = params[..., 0], params[..., 1]
        bound = self.log_scale_bound
        return shift, bound * torch.tanh(raw / bound)

    def forward(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(h(z), log h'(z))`` elementwise."""
        shift, log_scale = self._shift_and_log_scale(params)
        return z * torch.exp(log_scale) + shift, log_scale

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(h^{-1}(y), log h'(h^{-1}(y)))`` elementwise."""
        shift, log_scale = self._shift_and_log_scale(params)
        return (y - shift) * torch.exp(-log_scale), log_scale

    def extra_repr(self) -> str:
        return f"log_scale_bound={self.log_scale_bound}"


class SplineElement(nn.Module):
    """Monotone rational-quadratic spline on ``[-bound, bound]``, identity outside.

    References:
        Durkan et al. (2019), "Neural Spline Flows", NeurIPS.
    """

    def __init__(self, bins: int = 8, bound: float = 5.0) -> None:
        super().__init__()
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
        if not (isinstance(bound, int | float) and math.isfinite(bound) and bound > 0):
            raise ValueError(f"bound must be a positive finite number, got {bound!r}")
        self.bins = bins
        self.bound = float(bound)
        self.num_params = spline_params_per_dim(bins)

    def forward(self, z: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(h(z), log h'(z))`` elementwise; ``params`` is ``z.shape + (3K - 1,)``."""
        return rational_quadratic_spline_from_params(
            z, params, self.bins, inverse=False, bound=self.bound
        )

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(h^{-1}(y), log h'(h^{-1}(y)))`` elementwise."""
        z, ladj_inverse = rational_quadratic_spline_from_params(
            y, params, self.bins, inverse=True, bound=self.bound
        )
        return z, -ladj_inverse

    def extra_repr(self) -> str:
        return f"bins={self.bins}, bound={self.bound}"


def make_element(
    element: str, *, bins: int = 8, bound: float = 5.0, log_scale_bound: float = 5.0
) -> AffineElement | SplineElement:
    """Build an element transform by name: ``"affine"`` or ``"spline"``."""
    if element == "affine":
        return AffineElement(log_scale_bound)
    if element == "spline":
        return SplineElement(bins, bound)
    raise ValueError(f"element must be 'affine' or 'spline', got {element!r}")
