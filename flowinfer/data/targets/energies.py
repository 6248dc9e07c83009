"""The 2-D energies U1-U4 of Rezende & Mohamed (2015) on a box, with ``log Z`` by quadrature.

Example:
    >>> u = energy("U3")
    >>> u.dim, u.bounds
    (2, (-4.0, 4.0))

References:
    Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows", ICML.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from flowinfer.checks import check_choice, check_number
from flowinfer.data.targets.base import Target, check_sample_size, make_generator

__all__ = ["RezendeEnergy", "energy"]


def _composite_gauss_legendre(a: float, b: float, panels: int, nodes: int):
    """Nodes and weights of ``nodes``-point Gauss-Legendre on each of ``panels`` equal parts."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    edges = np.linspace(a, b, panels + 1)
    half = np.diff(edges)[:, None] / 2
    mid = (edges[:-1] + edges[1:])[:, None] / 2
    return (mid + half * x).ravel(), (half * w).ravel()


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


class RezendeEnergy(Target):
    """The 2-D energies U1-U4 of Rezende & Mohamed (2015), restricted to a box.

    ``p~(z) = exp(-U(z))`` for ``z`` in the box ``[-box, box]^2`` (default ``[-4, 4]^2``) and 0
    outside (``log_prob = -inf``). With ``w1 = sin(pi z1 / 2)``,
    ``w2 = 3 exp(-((z1 - 1) / 0.6)^2 / 2)``, ``w3 = 3 sigmoid((z1 - 1) / 0.3)``:

    * U1: ``((|z| - 2) / 0.4)^2 / 2``
      ``- log(exp(-((z1 - 2) / 0.6)^2 / 2) + exp(-((z1 + 2) / 0.6)^2 / 2))``
    * U2: ``((z2 - w1) / 0.4)^2 / 2``
    * U3: ``-log(exp(-((z2 - w1) / 0.35)^2 / 2) + exp(-((z2 - w1 + w2) / 0.35)^2 / 2))``
    * U4: ``-log(exp(-((z2 - w1) / 0.4)^2 / 2) + exp(-((z2 - w1 + w3) / 0.35)^2 / 2))``

    U2-U4 do not decay along ``z1``: the box is what makes them normalizable. ``log_z`` is
    computed once, by quadrature on a route independent of ``log_prob``: for U2-U4 the ``z2``
    integral is closed form (normal CDFs) and ``z1`` uses composite Gauss-Legendre; for U1 the
    box is integrated in polar coordinates (``r`` up to the box's edge for each angle).
    ``sample`` is exact rejection sampling from the uniform distribution on the box.

    Args:
        kind: ``"U1"``, ``"U2"``, ``"U3"`` or ``"U4"``.
        box: half-width of the box (positive; the modes lie inside ``[-3, 3]^2``).

    Raises:
        TypeError: ``kind`` is not a str or ``box`` not a number.
        ValueError: an unknown ``kind``, or ``box`` not positive and finite.

    Example:
        >>> u = RezendeEnergy("U2")
        >>> round(u.log_z, 6) == round(math.log(8 * 0.4 * math.sqrt(2 * math.pi)), 6)
        True
        >>> u.log_prob(torch.tensor([[0.0, 0.0], [5.0, 0.0]]))
        tensor([-0., -inf])

    References:
        Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows", ICML.
    """

    _KINDS = ("U1", "U2", "U3", "U4")
    # An upper bound of exp(-U) for the rejection sampler: each energy is -log of a sum of
    # at most two factors exp(-(...)^2 / 2) <= 1.
    _BOUND = 2.0

    def __init__(self, kind: str = "U1", box: float = 4.0) -> None:
        if not isinstance(kind, str):
            raise TypeError(f"kind must be a str, one of {self._KINDS}, got "
                            f"{type(kind).__name__}")
        self.kind = check_choice(kind.upper(), "kind", self._KINDS)
        self.box = check_number(box, "box", low=0.0, low_open=True)
        self.dim = 2
        self.name = self.kind
        self.bounds = (-self.box, self.box)

    def _log_density(self, z: Tensor) -> Tensor:
        z1, z2 = z[..., 0], z[..., 1]
        w1 = torch.sin(math.pi * z1 / 2)
        if self.kind == "U1":
            radius = z.norm(dim=-1)
            pair = torch.stack([-0.5 * ((z1 - 2) / 0.6) ** 2, -0.5 * ((z1 + 2) / 0.6) ** 2])
            return -0.5 * ((radius - 2) / 0.4) ** 2 + torch.logsumexp(pair, 0)
        if self.kind == "U2":
            return -0.5 * ((z2 - w1) / 0.4) ** 2
        if self.kind == "U3":
            w2 = 3 * torch.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
            pair = torch.stack([-0.5 * ((z2 - w1) / 0.35) ** 2,
                                -0.5 * ((z2 - w1 + w2) / 0.35) ** 2])
            return torch.logsumexp(pair, 0)
        w3 = 3 * torch.sigmoid((z1 - 1) / 0.3)
        pair = torch.stack([-0.5 * ((z2 - w1) / 0.4) ** 2, -0.5 * ((z2 - w1 + w3) / 0.35) ** 2])
        return torch.logsumexp(pair, 0)

    def log_prob(self, x: Tensor) -> Tensor:
        """``-U(x)`` inside the box, ``-inf`` outside; shape ``x.shape[:-1]``."""
        x = self._check(x)
        inside = (x.abs() <= self.box).all(-1)
        return torch.where(inside, self._log_density(x), torch.full_like(x[..., 0], -math.inf))

    @cached_property
    def _log_z(self) -> float:
        b = self.box
        if self.kind == "U1":
            return self._log_z_polar()
        z1, w = _composite_gauss_legendre(-b, b, 400, 20)
        w1 = np.sin(np.pi * z1 / 2)
        if self.kind == "U2":
            comps = [(w1, 0.4)]
        elif self.kind == "U3":
            w2 = 3 * np.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
            comps = [(w1, 0.35), (w1 - w2, 0.35)]
        else:
            w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
            comps = [(w1, 0.4), (w1 - w3, 0.35)]
        # Integral over z2 in [-b, b] of exp(-((z2 - m) / s)^2 / 2) is s sqrt(2 pi) times the
        # normal probability of the interval.
        inner = sum(s * math.sqrt(2 * math.pi) * (_norm_cdf((b - m) / s) - _norm_cdf((-b - m) / s))
                    for m, s in comps)
        return float(np.log(np.sum(w * inner)))

    def _log_z_polar(self) -> float:
        b = self.box
        total = 0.0
        # Eight angular panels: the distance to the box's edge, b / max(|cos|, |sin|), is smooth
        # between the multiples of pi/4 where it has kinks.
        for k in range(8):
            theta, w_theta = _composite_gauss_legendre(k * math.pi / 4, (k + 1) * math.pi / 4,
                                                       8, 20)
            edge = b / np.maximum(np.abs(np.cos(theta)), np.abs(np.sin(theta)))
            t, w_t = _composite_gauss_legendre(0.0, 1.0, 200, 10)
            r = edge[:, None] * t[None, :]
            z1 = r * np.cos(theta)[:, None]
            f = np.exp(-0.5 * ((r - 2) / 0.4) ** 2) * (
                np.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + np.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)
            )
            # dA = r dr dtheta with r = edge * t, dr = edge dt.
            total += float(np.sum(w_theta[:, None] * w_t[None, :] * f * r * edge[:, None]))
        return math.log(total)

    @property
    def log_z(self) -> float:
        return self._log_z

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """``n`` exact draws by rejection from the uniform distribution on the box."""
        n = check_sample_size(n)
        gen = make_generator(seed)
        accept_rate = math.exp(self.log_z) / ((2 * self.box) ** 2 * self._BOUND)
        out: list[Tensor] = []
        have = 0
        while have < n:
            m = int(1.2 * (n - have) / accept_rate) + 16
            z = (torch.rand(m, 2, generator=gen, dtype=torch.float64) * 2 - 1) * self.box
            u = torch.rand(m, generator=gen, dtype=torch.float64)
            keep = z[u * self._BOUND < self._log_density(z).exp()]
            out.append(keep)
            have += keep.shape[0]
        return torch.cat(out)[:n].to(torch.get_default_dtype())


def energy(kind: str, box: float = 4.0) -> RezendeEnergy:
    """Shortcut for :class:`RezendeEnergy`: ``energy("U3")``.

    Example:
        >>> energy("U1").bounds
        (-4.0, 4.0)
    """
    return RezendeEnergy(kind, box)
