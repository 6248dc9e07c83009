"""The 2-D toy data sets of the flow literature, two of them with their exact density.

The sets are those of FFJORD, BNAF and NSF: ``moons``, ``8gaussians``, ``checkerboard``,
``2spirals``, ``pinwheel``, ``rings`` and ``circles``, drawn with a seed. Two of them have a
density known in closed form (:func:`toy_log_prob`), so the best possible test negative
log-likelihood is their entropy (:func:`toy_entropy`): about 2.84 nats for ``8gaussians`` and
``ln 32 = 3.466`` nats for ``checkerboard``. The gap between a flow's test NLL and that
entropy is the KL divergence from the data to the flow.

Example:
    >>> x = make_toy("moons", 5000, seed=0)
    >>> x.shape
    torch.Size([5000, 2])

References:
    Grathwohl et al. (2019), "FFJORD: Free-form Continuous Dynamics for Scalable Reversible
    Generative Models", ICLR.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any

import torch
from torch import Tensor

from flowinfer.checks import check_choice, check_int

__all__ = ["TOY_DATASETS", "make_toy", "toy_log_prob", "toy_entropy"]


def _uniform(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _normal(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _moons(n: int, g: torch.Generator) -> Tensor:
    # Two interleaved half circles with noise 0.1, scaled by 2 and centred (as in FFJORD).
    n_out = n // 2
    t = math.pi * _uniform(n, g)
    outer = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    inner = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)
    upper = torch.arange(n) < n_out
    x = torch.where(upper[:, None], outer, inner) + 0.1 * _normal((n, 2), g)
    return 2 * x - torch.tensor([1.0, 0.2], dtype=torch.float64)


# 8 gaussians: centres on a circle of radius 4/sqrt(2), standard deviation 0.5/sqrt(2).
_8G_RADIUS = 4 / math.sqrt(2)
_8G_STD = 0.5 / math.sqrt(2)


def _8g_centres() -> Tensor:
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    return _8G_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def _8gaussians(n: int, g: torch.Generator) -> Tensor:
    which = torch.randint(0, 8, (n,), generator=g)
    return _8g_centres()[which] + _8G_STD * _normal((n, 2), g)


def _8gaussians_log_prob(x: Tensor) -> Tensor:
    centres = _8g_centres().to(x)
    sq = ((x[..., None, :] - centres) ** 2).sum(-1)
    log_comp = -sq / (2 * _8G_STD**2) - math.log(2 * math.pi * _8G_STD**2)
    return torch.logsumexp(log_comp, dim=-1) - math.log(8)


# Checkerboard: uniform on the 8 squares of side 2 in [-4, 4]^2 whose index sum is even.
def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    col = torch.randint(0, 4, (n,), generator=g)
    row = 2 * torch.randint(0, 2, (n,), generator=g) + (col % 2)
    corner = torch.stack([col, row], dim=1).double() * 2 - 4
    return corner + 2 * torch.rand((n, 2), generator=g, dtype=torch.float64)


def _checkerboard_log_prob(x: Tensor) -> Tensor:
    cell = torch.floor((x + 4) / 2)
    inside = ((x >= -4) & (x < 4)).all(-1) & ((cell.sum(-1) % 2) == 0)
    out = torch.full(x.shape[:-1], -math.log(32), dtype=x.dtype, device=x.device)
    return out.masked_fill(~inside, -math.inf)


def _2spirals(n: int, g: torch.Generator) -> Tensor:
    half = (n + 1) // 2
    turn = torch.sqrt(_uniform(half, g)) * (3 * math.pi)
    arm = torch.stack([-torch.cos(turn) * turn, torch.sin(turn) * turn], dim=1)
    arm = arm + 0.5 * torch.rand((half, 2), generator=g, dtype=torch.float64)
    x = torch.cat([arm, -arm])[:n] / 3
    return x + 0.1 * _normal((n, 2), g)


def _pinwheel(n: int, g: torch.Generator) -> Tensor:
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    label = torch.arange(n) % arms
    feat = _normal((n, 2), g) * torch.tensor([radial_std, tangential_std], dtype=torch.float64)
    feat[:, 0] += 1.0
    angle = label.double() * (2 * math.pi / arms) + rate * torch.exp(feat[:, 0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotated = torch.stack([cos * feat[:, 0] - sin * feat[:, 1],
                           sin * feat[:, 0] + cos * feat[:, 1]], dim=1)
    return 2 * rotated


def _rings(n: int, g: torch.Generator) -> Tensor:
    # Four concentric rings of radius 0.75 to 3, points spread in proportion to the radius.
    radii = torch.tensor([0.75, 1.5, 2.25, 3.0], dtype=torch.float64)
    which = torch.multinomial(radii, n, replacement=True, generator=g)
    t = 2 * math.pi * _uniform(n, g)
    x = radii[which, None] * torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    return x + 0.08 * _normal((n, 2), g)


def _circles(n: int, g: torch.Generator) -> Tensor:
    # Two concentric circles of radius 3 and 1.5 (scikit-learn's make_circles, factor 0.5).
    t = 2 * math.pi * _uniform(n, g)
    radius = torch.where(torch.arange(n) < n // 2, 3.0, 1.5).double()
    x = radius[:, None] * torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    return x + 0.24 * _normal((n, 2), g)


_TOY: dict[str, Callable[[int, torch.Generator], Tensor]] = {
    "moons": _moons,
    "8gaussians": _8gaussians,
    "checkerboard": _checkerboard,
    "2spirals": _2spirals,
    "pinwheel": _pinwheel,
    "rings": _rings,
    "circles": _circles,
}
_TOY_LOG_PROB: dict[str, Callable[[Tensor], Tensor]] = {
    "8gaussians": _8gaussians_log_prob,
    "checkerboard": _checkerboard_log_prob,
}
TOY_DATASETS: tuple[str, ...] = tuple(_TOY)
"""Names accepted by :func:`make_toy`."""


def _check_toy_name(name: Any, table: dict[str, Any]) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {tuple(table)}, got {type(name).__name__}")
    return check_choice(name, "name", tuple(table))


def make_toy(
    name: str,
    n: int,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> Tensor:
    """Draw ``n`` points of a 2-D toy data set.

    Args:
        name: one of :data:`TOY_DATASETS` (``"moons"``, ``"8gaussians"``, ``"checkerboard"``,
            ``"2spirals"``, ``"pinwheel"``, ``"rings"``, ``"circles"``).
        n: number of points.
        seed: the same seed gives the same points; None draws from torch's global generator
            (so ``torch.manual_seed`` makes it repeatable).
        dtype: floating dtype of the result (default: torch's default dtype).
        device: device of the result (default: CPU).

    Returns:
        An ``(n, 2)`` tensor.

    Raises:
        TypeError: ``name`` is not a str, ``n`` or ``seed`` not an integer, ``dtype`` not a
            floating torch dtype.
        ValueError: unknown ``name``, ``n < 1`` or ``seed < 0``.

    Example:
        >>> x = make_toy("8gaussians", 1000, seed=1)
        >>> x.shape, bool(torch.equal(x, make_toy("8gaussians", 1000, seed=1)))
        (torch.Size([1000, 2]), True)

    References:
        Grathwohl et al. (2019), "FFJORD: Free-form Continuous Dynamics for Scalable
        Reversible Generative Models", ICLR.
    """
    name = _check_toy_name(name, _TOY)
    n = check_int(n, "n")
    seed = check_int(seed, "seed", 0, allow_none=True)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()))
    g = torch.Generator().manual_seed(seed)
    # Shuffle the rows: some generators emit one component after another, and the first k
    # rows should be a fair sample of k points.
    x = _TOY[name](n, g)[torch.randperm(n, generator=g)]
    return x.to(dtype=dtype or torch.get_default_dtype(), device=device)


def toy_log_prob(name: str, x: Any) -> Tensor:
    """Exact log density of the toy sets that have one (``8gaussians``, ``checkerboard``).

    Args:
        name: ``"8gaussians"`` or ``"checkerboard"``.
        x: points of shape ``(..., 2)``.

    Returns:
        ``log p(x)`` of shape ``x.shape[:-1]`` (``-inf`` off the checkerboard's support).

    Example:
        >>> round(float(toy_log_prob("checkerboard", torch.tensor([[0.5, 0.5]]))[0]), 4)
        -3.4657
    """
    name = _check_toy_name(name, _TOY_LOG_PROB)
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.double()
    if x.dim() < 1 or x.shape[-1] != 2:
        raise ValueError(f"x must have shape (..., 2), got {tuple(x.shape)}")
    return _TOY_LOG_PROB[name](x)


@cache
def toy_entropy(name: str) -> float:
    """Differential entropy ``-E[log p(x)]`` in nats: the best possible test NLL.

    ``checkerboard`` is uniform on an area of 32, so its entropy is ``ln 32``. For
    ``8gaussians`` it is integrated numerically on a fine grid (the components overlap only in
    far tails, so it is close to ``ln 8 + 1 + ln(2 pi sigma^2) = 2.838``).

    Example:
        >>> round(toy_entropy("checkerboard"), 4)
        3.4657
    """
    name = _check_toy_name(name, _TOY_LOG_PROB)
    if name == "checkerboard":
        return math.log(32)
    # Midpoint rule on [-6, 6]^2: the density is smooth and negligible at the edge, so the
    # quadrature error is far below 1e-6 nats.
    m, lo, hi = 800, -6.0, 6.0
    h = (hi - lo) / m
    axis = lo + h * (torch.arange(m, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    logp = _8gaussians_log_prob(torch.stack([gx, gy], -1).reshape(-1, 2))
    return float(-(torch.exp(logp) * logp).sum() * h * h)


