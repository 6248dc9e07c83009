"""Glow's invertible 1x1 convolution in LU form.

References:
    Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions",
    NeurIPS.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from flowinfer.checks import check_choice
from flowinfer.transforms.image_base import ImageBijector
from flowinfer.transforms.linear import LULinear

__all__ = ["InvertibleConv1x1"]


class InvertibleConv1x1(ImageBijector):
    """Glow's invertible 1x1 convolution ``y[:, i, j] = W x[:, i, j]`` in LU form.

    ``W = P L U`` with a fixed channel permutation ``P``, ``L`` unit lower-triangular and
    ``U`` upper-triangular with diagonal ``exp(log_diag)`` (the
    :class:`~flowinfer.transforms.linear.LULinear` map applied to every pixel), so
    ``log|det J| = H * W * sum(log_diag)`` costs O(C) and the inverse is two triangular
    solves. As in Glow it starts as a random rotation (``init="rotation"``): an orthogonal
    ``Q`` drawn from the global torch generator, whose LU factors set ``P``, ``L`` and ``U``
    (columns sign-flipped so that ``U``'s diagonal is positive). The rotation is volume
    preserving and mixes every channel into both halves of the next coupling;
    ``init="reversal"`` starts as the channel reversal instead (a fixed permutation).

    Args:
        shape: event shape ``(C, H, W)``.
        init: ``"rotation"`` (default) or ``"reversal"``.

    Example:
        >>> t = InvertibleConv1x1((4, 3, 3))
        >>> x = torch.randn(2, 4, 3, 3)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-5)
        True
        >>> w = t.weight()
        >>> torch.allclose(w @ w.T, torch.eye(4), atol=1e-5)   # a rotation at the start
        True

    References:
        Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions".
    """

    _INITS = ("rotation", "reversal")

    def __init__(self, shape: Sequence[int], init: str = "rotation") -> None:
        super().__init__(shape)
        check_choice(init, "init", self._INITS)
        c = self.channels
        self.linear = LULinear(c, bias=False)
        perm = torch.arange(c - 1, -1, -1)  # "reversal": L = U = I, so W is P alone
        if init == "rotation":
            q = torch.linalg.qr(torch.randn(c, c, dtype=torch.float64))[0]
            p_mat, lower, upper = torch.linalg.lu(q)
            diag = upper.diagonal()
            # Q D (D = sign(diag U)) is still orthogonal and its U factor has diagonal |u_ii|.
            upper = upper * diag.sign()
            with torch.no_grad():
                dtype = self.linear.lower.dtype
                self.linear.lower.copy_(lower.tril(-1).to(dtype))
                self.linear.upper.copy_(upper.triu(1).to(dtype))
                self.linear.log_diag.copy_(diag.abs().log().to(dtype))
            perm = p_mat.argmax(dim=1)
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def weight(self) -> Tensor:
        """The ``C x C`` matrix ``W = P L U``."""
        return self.linear.weight()[self.perm]

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y, ladj = self.linear.call_and_ladj(x.movedim(-3, -1))
        return y[..., self.perm].movedim(-1, -3), ladj.sum(dim=(-2, -1))

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, ladj = self.linear.inverse_and_ladj(y.movedim(-3, -1)[..., self.inv_perm])
        return x.movedim(-1, -3), ladj.sum(dim=(-2, -1))
