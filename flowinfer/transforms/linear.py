"""LU-decomposed invertible linear map (Glow's invertible 1x1 convolution, for vectors)."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from flowinfer.checks import check_bool, check_int
from flowinfer.transforms.base import Bijector

__all__ = ["LULinear"]


class LULinear(Bijector):
    """``y = x W^T + b`` with ``W = L U``, ``L`` unit lower-triangular, ``U`` upper-triangular.

    The diagonal of ``U`` is ``exp(log_diag)``, so ``W`` is always invertible and
    ``log|det W| = sum(log_diag)`` costs O(dim). The inverse is two triangular solves.
    Starts at the identity.

    Args:
        dim: event size.
        bias: add a learnable bias ``b``.

    Example:
        >>> t = LULinear(3)
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(t.inv(t(x)), x)
        True

    References:
        Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions".
    """

    def __init__(self, dim: int, bias: bool = True) -> None:
        super().__init__(check_int(dim, "dim"))
        check_bool(bias, "bias")
        self.lower = nn.Parameter(torch.zeros(dim, dim))
        self.upper = nn.Parameter(torch.zeros(dim, dim))
        self.log_diag = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.dim, dtype=self.lower.dtype, device=self.lower.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(torch.exp(self.log_diag))
        return lower, upper

    def weight(self) -> Tensor:
        """The matrix ``W = L U``."""
        lower, upper = self._factors()
        return lower @ upper

    def _ladj(self, x: Tensor) -> Tensor:
        return self.log_diag.sum().expand(x.shape[:-1])

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y = x @ self.weight().T
        if self.bias is not None:
            y = y + self.bias
        return y, self._ladj(x)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        lower, upper = self._factors()
        rows = y if self.bias is None else y - self.bias
        flat = rows.reshape(-1, self.dim)
        # Row vectors: x W^T = y  =>  x = y L^{-T} U^{-T}, two triangular solves from the right.
        flat = torch.linalg.solve_triangular(lower.T, flat, upper=True, left=False,
                                             unitriangular=True)
        flat = torch.linalg.solve_triangular(upper.T, flat, upper=False, left=False)
        return flat.reshape(y.shape), self._ladj(y)


def lu_linear(dim: int, bias: bool = True) -> LULinear:
    """Deprecated: use :class:`LULinear`."""
    warnings.warn("lu_linear(dim) is deprecated and will be removed in flowinfer 0.3; use "
                  "LULinear(dim)", DeprecationWarning, stacklevel=2)
    return LULinear(dim, bias=bias)
