"""The base class of the test targets and the argument checks their samplers share."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowinfer.checks import check_int

__all__ = ["Target"]

LOG_2PI = math.log(2 * math.pi)


def check_sample_size(n: object) -> int:
    """``n`` as an int if it is an integer >= 1 (``TypeError`` / ``ValueError`` otherwise)."""
    return check_int(n, "n")


def make_generator(seed: object) -> torch.Generator | None:
    """A torch generator seeded with ``seed`` (a non-negative integer); None for None."""
    seed = check_int(seed, "seed", 0, allow_none=True)
    return None if seed is None else torch.Generator().manual_seed(seed)


class Target:
    """Base class: an unnormalized density on ``R^dim`` (subclasses set the attributes).

    Attributes:
        dim: event size.
        name: short name.
        log_z: exact ``log`` of the integral of ``exp(log_prob)``, or None when unknown.
        bounds: ``(low, high)`` of a box that holds nearly all the mass (for plots).

    Example:
        >>> class Gauss(Target):
        ...     dim, name, log_z = 1, "gauss", 0.5 * LOG_2PI
        ...     def log_prob(self, x):
        ...         return -0.5 * self._check(x).square().sum(-1)
        >>> Gauss().log_prob(torch.tensor([[0.0], [2.0]]))
        tensor([-0., -2.])
    """

    dim: int = 0
    name: str = "target"
    bounds: tuple[float, float] = (-4.0, 4.0)

    @property
    def log_z(self) -> float | None:
        return None

    def _check(self, x: object) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.dim:
            raise ValueError(
                f"x must have shape (..., {self.dim}) for target {self.name!r}, "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        return x

    def log_prob(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, n: int, seed: int | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError(f"target {self.name!r} has no exact sampler")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"
