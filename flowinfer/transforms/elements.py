"""Element transforms: monotone scalar maps ``h(z; params)`` applied per dimension.

Coupling and autoregressive layers share these. Each maps all-zero parameters to the identity,
so a layer whose conditioner outputs zeros is the identity map.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowinfer.checks import check_choice, check_int, check_number
from flowinfer.splines import rational_quadratic_spline_from_params, spline_params_per_dim

__all__ = ["AffineElement", "SplineElement", "element_name", "make_element"]


class AffineElement(nn.Module):
    """``h(z) = z * exp(s) + t`` with ``s`` softly clamped to ``(-bound, bound)``.

    The soft clamp ``bound * tanh(raw / bound)`` keeps single-layer scales within
    ``exp(+-bound)``, which prevents the overflow that unbounded ``exp`` causes early in
    training, while staying smooth (and equal to ``raw`` near zero).
    """

    num_params = 2

    def __init__(self, log_scale_bound: float = 5.0) -> None:
        super().__init__()
        self.log_scale_bound = check_number(log_scale_bound, "log_scale_bound", low=0.0,
                                            low_open=True)

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
        self.bins = check_int(bins, "bins", 2)
        self.bound = check_number(bound, "bound", low=0.0, low_open=True)
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
    element: str | AffineElement | SplineElement, *, bins: int = 8, bound: float = 5.0,
    log_scale_bound: float = 5.0,
) -> AffineElement | SplineElement:
    """The element transform ``element`` names (``"affine"`` or ``"spline"``, built with the
    given settings), or ``element`` itself when it is already an element object.

    Example:
        >>> make_element("spline", bins=4).bins
        4
        >>> make_element(AffineElement(log_scale_bound=2.0)).log_scale_bound
        2.0
    """
    if isinstance(element, AffineElement | SplineElement):
        return element
    if not isinstance(element, str):
        raise TypeError(f"element must be 'affine', 'spline' or an element object "
                        f"(AffineElement, SplineElement), got {type(element).__name__}")
    check_choice(element, "element", ("affine", "spline"))
    if element == "affine":
        return AffineElement(log_scale_bound)
    return SplineElement(bins, bound)


def element_name(element: AffineElement | SplineElement) -> str:
    """``"affine"`` or ``"spline"``: the short name of an element object."""
    return "affine" if isinstance(element, AffineElement) else "spline"
