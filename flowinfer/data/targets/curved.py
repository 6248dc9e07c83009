"""Two curved test densities with a closed-form ``log Z``: the banana and Neal's funnel.

Example:
    >>> Banana().dim, Funnel().dim
    (2, 10)

References:
    Haario, Saksman & Tamminen (1999), "Adaptive proposal distribution for random walk
    Metropolis algorithm", Computational Statistics (the banana).
    Neal (2003), "Slice Sampling", Annals of Statistics (the funnel).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowinfer.checks import check_int, check_number
from flowinfer.data.targets.base import LOG_2PI, Target, check_sample_size, make_generator

__all__ = ["Banana", "Funnel"]


class Banana(Target):
    """A curved 2-D density: ``x1 ~ N(0, s1^2)``, ``x2 | x1 ~ N(c (x1^2 - s1^2), s2^2)``.

    The twisted Gaussian of Haario et al. (1999), written so that ``x2`` has mean zero.
    ``log_prob`` drops the normal constants, so ``log_z = log(2 pi s1 s2)``.

    Args:
        s1, s2: standard deviations of ``x1`` and of ``x2`` given ``x1`` (positive).
        curvature: ``c``.

    Raises:
        TypeError: an argument is not a number.
        ValueError: ``s1`` or ``s2`` not positive, or any argument not finite.

    Example:
        >>> b = Banana()
        >>> round(b.log_z, 4) == round(math.log(2 * math.pi * 2.0 * 1.0), 4)
        True
        >>> b.sample(3, seed=0).shape
        torch.Size([3, 2])

    References:
        Haario, Saksman & Tamminen (1999), "Adaptive proposal distribution for random walk
        Metropolis algorithm", Computational Statistics 14.
    """

    def __init__(self, s1: float = 2.0, s2: float = 1.0, curvature: float = 0.5) -> None:
        self.s1 = check_number(s1, "s1", low=0.0, low_open=True)
        self.s2 = check_number(s2, "s2", low=0.0, low_open=True)
        self.curvature = check_number(curvature, "curvature")
        self.dim = 2
        self.name = "banana"
        self.bounds = (-4.5 * self.s1, 4.5 * self.s1)

    @property
    def log_z(self) -> float:
        return math.log(2 * math.pi * self.s1 * self.s2)

    def log_prob(self, x: Tensor) -> Tensor:
        x = self._check(x)
        x1, x2 = x[..., 0], x[..., 1]
        mean2 = self.curvature * (x1.square() - self.s1**2)
        return -0.5 * (x1 / self.s1) ** 2 - 0.5 * ((x2 - mean2) / self.s2) ** 2

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        n = check_sample_size(n)
        eps = torch.randn(n, 2, generator=make_generator(seed))
        x1 = self.s1 * eps[:, 0]
        x2 = self.curvature * (x1.square() - self.s1**2) + self.s2 * eps[:, 1]
        return torch.stack([x1, x2], -1)


class Funnel(Target):
    """Neal's funnel: ``v ~ N(0, scale^2)``, ``x_i | v ~ N(0, exp(v))`` for ``i < dim``.

    Coordinates are ``(v, x_1, ..., x_{dim-1})``; ``log_prob`` is normalized, so ``log_z = 0``.
    The neck (``v`` very negative) is hard for any sampler; reverse KL tends to cut it off,
    which shows as a heavy importance-weight tail (a high PSIS k-hat).

    Args:
        dim: total dimension (at least 2; default 10 as in Neal's paper).
        scale: standard deviation of ``v`` (default 3).

    Raises:
        TypeError: ``dim`` is not an integer or ``scale`` not a number.
        ValueError: ``dim < 2``, or ``scale`` not positive and finite.

    Example:
        >>> f = Funnel()
        >>> f.dim, f.log_z
        (10, 0.0)
        >>> f.sample(4, seed=0).shape
        torch.Size([4, 10])

    References:
        Neal (2003), "Slice Sampling", Annals of Statistics 31(3).
    """

    def __init__(self, dim: int = 10, scale: float = 3.0) -> None:
        self.dim = check_int(dim, "dim", 2)
        self.scale = check_number(scale, "scale", low=0.0, low_open=True)
        self.name = "funnel"
        self.bounds = (-3.0 * self.scale, 3.0 * self.scale)

    @property
    def log_z(self) -> float:
        return 0.0

    def log_prob(self, x: Tensor) -> Tensor:
        x = self._check(x)
        v, rest = x[..., 0], x[..., 1:]
        log_pv = -0.5 * (v / self.scale) ** 2 - math.log(self.scale) - 0.5 * LOG_2PI
        k = self.dim - 1
        log_px = -0.5 * (rest.square().sum(-1) * torch.exp(-v) + k * v + k * LOG_2PI)
        return log_pv + log_px

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        n = check_sample_size(n)
        eps = torch.randn(n, self.dim, generator=make_generator(seed))
        v = self.scale * eps[:, :1]
        return torch.cat([v, eps[:, 1:] * torch.exp(v / 2)], -1)
