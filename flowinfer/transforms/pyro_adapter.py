"""Adapter that gives Pyro's own flow transforms the flowinfer contract.

Pyro's ``Planar``, ``Radial``, ``Sylvester``, ``Householder`` and ``BlockAutoregressive``
cache on the identity of the input only, so after an optimizer step the same tensor returns
the old output. The adapter clears the wrapped transform's cache before each fused call, so
``y`` and ``log|det J|`` always come from the current parameters.
"""

from __future__ import annotations

import torch
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms import Sylvester
from torch import Tensor

from flowinfer.transforms.base import Bijector

__all__ = ["PyroTransform", "CorrectedSylvester"]


class CorrectedSylvester(Sylvester):
    """Pyro's ``Sylvester`` with the log-determinant made to match the map.

    Pyro computes ``y = x + tanh(x B + b) A`` (row vectors) with ``A = Q R`` and
    ``B = S Q^T``, but reports ``sum log(1 + h' R_ii S_ii)``, which is the log-determinant
    only when ``A B`` is triangular. With row vectors the Jacobian is ``I + B diag(h') A`` and
    ``det = det(I + diag(h') A B)``, so ``A = R Q^T`` and ``B = Q S`` (``A B = R S``,
    upper-triangular) make the reported value exact. flowinfer's contract test (log-det
    against the autograd Jacobian) found the mismatch in pyro-ppl 1.9.

    References:
        van den Berg et al. (2018), "Sylvester Normalizing Flows for Variational Inference".
    """

    def Q(self, x: Tensor) -> Tensor:  # noqa: N802 - Pyro's name
        u = self.u()
        eye = torch.eye(self.input_dim, dtype=x.dtype, device=x.device)
        q = eye
        for idx in range(u.size(-2)):
            q = q @ (eye - 2.0 * torch.outer(u[idx], u[idx]))
        return q

    def _call(self, x: Tensor) -> Tensor:
        q, r, s = self.Q(x), self.R(), self.S()
        preactivation = x @ (q @ s) + self.b
        y = x + self.tanh(preactivation) @ (r @ q.T)
        self._cached_logDetJ = torch.log1p(
            self.dtanh_dx(preactivation) * r.diagonal() * s.diagonal() + 1e-8
        ).sum(-1)
        return y


class PyroTransform(Bijector):
    """Wraps a Pyro ``TransformModule`` (event_dim 1) as a :class:`Bijector`.

    Args:
        transform: the Pyro transform (its parameters become this module's).
        dim: event size.
        name: display name used in error messages.
        has_inverse: whether the Pyro transform implements its inverse (Pyro's Planar,
            Radial, Sylvester and BlockAutoregressive raise on ``inv`` of a new point).

    Example:
        >>> from pyro.distributions.transforms import householder
        >>> t = PyroTransform(householder(3), dim=3, name="householder", has_inverse=True)
        >>> x = torch.randn(2, 3)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-5)
        True
    """

    def __init__(
        self, transform: TransformModule, dim: int, name: str, has_inverse: bool
    ) -> None:
        super().__init__(dim)
        self.inner = transform
        self.name = name
        self.has_inverse = has_inverse

    def _reset_inner_cache(self) -> None:
        # Pyro keeps graph-carrying tensors in `_cached_*` attributes (output, log-det);
        # dropping them before and after each call keeps values fresh and lets the module be
        # deep-copied or pickled at any time.
        for attr in [a for a in vars(self.inner) if a.startswith("_cached")]:
            setattr(self.inner, attr, (None, None) if attr == "_cached_x_y" else None)

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        self._reset_inner_cache()
        y = self.inner(x)
        ladj = self.inner.log_abs_det_jacobian(x, y)
        self._reset_inner_cache()
        return y, ladj

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if not self.has_inverse:
            raise NotImplementedError(
                f"{self.name!r} has no analytic inverse, so the density of arbitrary points "
                "cannot be computed; use it where only its own samples are scored (guides, "
                "reverse KL, sample_and_log_prob), or pick a flow with an inverse "
                "(realnvp, nsf, maf, nsf-ar, glow)"
            )
        self._reset_inner_cache()
        x = self.inner.inv(y)
        ladj = self.inner.log_abs_det_jacobian(x, y)
        self._reset_inner_cache()
        return x, ladj

