"""Multi-start mode search: find the separated modes of a log density before VI begins.

A variational fit started in one mode stays there (reverse KL is mode seeking) and its
importance weights cannot see what it never visits, so PSIS k-hat reads *good* on a bimodal
posterior fitted with one mode. Searching for modes from several starts (the prior's median,
prior draws, Stan-style uniform draws on ``[-2, 2]`` in the unconstrained space) finds the
separated ones; each then gets its own guide, and the found modes are the check that the
final draws hold mass everywhere the search found some.

Two end points are one mode when the straight segment between them never dips below the
lower of their two log densities by more than ``barrier`` nats; a ridge or a flat valley
(the ends differ by rounding) has no barrier, separated modes a deep one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from flowinfer.inference.laplace import laplace_start, safe_log_density

__all__ = ["Mode", "ModeSearch", "find_modes"]

LogDensity = Callable[[Tensor], Tensor]


@dataclass
class Mode:
    """One local maximum: ``loc``, its Laplace factor (or ``None``), density and mass.

    ``log_mass`` is the Laplace estimate ``log p(loc) + log det(L) + d/2 log(2 pi)`` of the
    mass around the mode (``-inf`` without a Laplace factor); ``starts`` names the starts
    that ended here.
    """

    loc: Tensor
    scale_tril: Tensor | None
    log_density: float
    log_mass: float
    starts: list[str] = field(default_factory=list)


@dataclass
class ModeSearch:
    """Outcome of :func:`find_modes`: the distinct converged modes, best first."""

    modes: list[Mode]
    num_starts: int
    num_converged: int
    messages: dict[str, str]
    best_point: Tensor | None = None
    #: Every distinct mode found, also those dropped for little mass (checked for coverage).
    all_modes: list[Mode] = field(default_factory=list)

    @property
    def unbounded(self) -> bool:
        """Whether some start found no mode (an unbounded or improper density, a funnel)."""
        return self.num_converged < self.num_starts


def _barrier(log_density: LogDensity, a: Tensor, b: Tensor, points: int = 17) -> float:
    """How far the segment ``a -> b`` dips below ``min(f(a), f(b))`` (0: no dip)."""
    with torch.no_grad():
        ts = torch.linspace(0.0, 1.0, points, dtype=a.dtype)
        values = [float(log_density(a + t * (b - a))) for t in ts]
    ends = min(values[0], values[-1])
    inner = min(values[1:-1])
    return max(0.0, ends - inner) if math.isfinite(inner) else math.inf


def find_modes(log_density: LogDensity, starts: Sequence[tuple[str, Tensor]], *,
               max_iter: int = 200, max_modes: int = 4, barrier: float = 4.0,
               min_relative_mass: float = 1e-3, max_dim: int = 500,
               progress: bool = False) -> ModeSearch:
    """L-BFGS from every start; merge end points of one mode; keep those with real mass.

    Args:
        log_density: ``u -> scalar`` (model errors and NaN count as ``-inf``).
        starts: ``(name, point)`` pairs.
        max_iter: L-BFGS iterations per start.
        max_modes: at most this many modes are returned (the most massive).
        barrier: nats the segment between two end points must dip to make them two modes.
        min_relative_mass: modes whose Laplace mass is below this share of the largest
            are dropped (they hold nothing a few thousand draws would see).
        max_dim: above this dimension the Hessian is skipped.
        progress: show a progress bar over the starts.

    Example:
        >>> def two_bumps(u):   # modes at -3 and +3, masses 0.3 and 0.7
        ...     a = torch.distributions.Normal(-3.0, 0.5).log_prob(u).sum() + math.log(0.3)
        ...     b = torch.distributions.Normal(3.0, 0.5).log_prob(u).sum() + math.log(0.7)
        ...     return torch.logaddexp(a, b)
        >>> starts = [(str(x), torch.tensor([x])) for x in (-4.0, -1.0, 2.0, 5.0)]
        >>> search = find_modes(two_bumps, starts)
        >>> [round(float(m.loc[0]), 2) for m in search.modes]
        [3.0, -3.0]

    References:
        Yao, Vehtari & Gelman (2022), "Stacking for Non-mixing Bayesian Computations: The
        Curse and Blessing of Multimodal Posteriors" (why separated modes need finding).
    """
    safe = safe_log_density(log_density)
    found: list[Mode] = []
    messages: dict[str, str] = {}
    converged = 0
    best_point, best_value = None, -math.inf
    from flowinfer.train.optim import progress as bar

    for name, point in bar(starts, progress, total=len(starts), desc="mode search"):
        start = laplace_start(safe, point, max_iter=max_iter, max_dim=max_dim)
        if math.isfinite(start.log_density) and start.log_density > best_value:
            best_point, best_value = start.loc, start.log_density
        if not start.converged or start.scale_tril is None:
            messages[name] = start.message or "no Laplace approximation"
            continue
        converged += 1
        log_mass = (start.log_density + float(start.scale_tril.diagonal().log().sum())
                    + 0.5 * start.loc.numel() * math.log(2 * math.pi))
        for mode in found:
            if _barrier(safe, mode.loc, start.loc) < barrier:
                mode.starts.append(name)
                if start.log_density > mode.log_density:  # keep the higher end point
                    mode.loc, mode.scale_tril = start.loc, start.scale_tril
                    mode.log_density, mode.log_mass = start.log_density, log_mass
                break
        else:
            found.append(Mode(start.loc, start.scale_tril, start.log_density, log_mass,
                              [name]))
    found.sort(key=lambda m: -m.log_mass)
    kept = found
    if found:
        top = found[0].log_mass
        kept = [m for m in found if m.log_mass - top > math.log(min_relative_mass)]
    return ModeSearch(kept[:max_modes], len(starts), converged, messages, best_point, found)
