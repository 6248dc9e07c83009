"""Where a bounded latent's posterior lies in the flow's space, predicted from the data.

NPE's flows work in the unconstrained space of each latent (``biject_to`` of its support:
the logit of a box, the log of a positive value). A posterior centred near a bound then
sits at ``logit((m - a) / (b - a))`` for a location ``m`` that is often close to linear in
the data: its place in the flow's space is far from linear there, and the networks must
learn that curve from the few simulations that land near the bound. A prior box's corner
is where NPE missed (gaussian_mixture's observation in the corner of its box: the narrow
component got 0.37 of the mass instead of 0.70; docs/benchmarks.md). sbi's flows work in
the constrained space, where the location is linear, and cut the box by rejection.

:class:`SupportLocation` gives the regressed members (:mod:`flowinfer.npe.regressed`) that
curve as features: a ridge regression of the *constrained* latents on the data, each
prediction clipped to the range of the simulated draws (so it stays inside the support),
mapped through the site's bijection and the latents' z-scoring. Only sites whose support
has a bound and whose bijection acts elementwise take part (intervals, half-lines);
unbounded sites would give features linear in the data, which the head already has, and
a simplex or a correlation matrix clipped coordinate by coordinate would leave its
support.

Example:
    >>> import torch
    >>> from torch.distributions import biject_to, constraints
    >>> box = constraints.interval(-1.0, 1.0)
    >>> g = torch.Generator().manual_seed(0)
    >>> theta = 2 * torch.rand(2000, 1, generator=g) - 1
    >>> x = theta + 0.05 * torch.randn(2000, 1, generator=g)
    >>> u = biject_to(box).inv(theta)
    >>> location = SupportLocation.fit(
    ...     [BoundedSite("theta", 0, torch.Size([1]), biject_to(box))], theta, x,
    ...     u.mean(0), u.std(0))
    >>> features = location(torch.tensor([[0.95], [0.0]]))  # unconstrained, z-scored
    >>> [round(float(v), 2) for v in (features[:, 0] * u.std(0) + u.mean(0))]
    [3.59, 0.0]

    (``logit((0.95 + 1) / 2) = 3.66``: the regression shrinks the data a little towards
    the prior's mean.)

References:
    Lueckmann et al. (2021), "Benchmarking Simulation-Based Inference", AISTATS (the
    gaussian_mixture task, bounded priors).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions.transforms import IndependentTransform

from flowinfer.npe.standardize import RegressionStandardizer
from flowinfer.npe.supports import support_bounds

__all__ = ["BoundedSite", "bounded_sites", "site_columns", "SupportLocation"]


@dataclass(frozen=True)
class BoundedSite:
    """A latent site that :class:`SupportLocation` predicts: its name, its first column
    in the latents' flat vector, its shape and its ``biject_to`` bijection."""

    name: str
    start: int
    shape: torch.Size
    transform: Any

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def bounded_sites(info: Any) -> list[BoundedSite]:
    """The latent sites of ``info`` (a ``ModelInfo``) with a bounded support and an
    elementwise bijection, in the latents' order.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from flowinfer.npe.sites import inspect_model
        >>> def model():
        ...     pyro.sample("loc", dist.Normal(0.0, 1.0))
        ...     pyro.sample("box", dist.Uniform(torch.zeros(2), 1.0).to_event(1))
        ...     pyro.sample("x", dist.Normal(0.0, 1.0))
        >>> [(s.name, s.start, s.size) for s in bounded_sites(inspect_model(model, "x"))]
        [('box', 1, 2)]
    """
    out, start = [], 0
    for name in info.latent_names:
        shape, ushape = info.latent_shapes[name], info.unconstrained_shapes[name]
        transform = base = info.transforms[name]
        while isinstance(base, IndependentTransform):  # to_event(...) of an elementwise map
            base = base.base_transform
        elementwise = ushape == shape and base.domain.event_dim == 0
        if elementwise and support_bounds(info.supports[name]):
            out.append(BoundedSite(name, start, torch.Size(shape), transform))
        start += math.prod(ushape)
    return out


def site_columns(sites: Sequence[BoundedSite]) -> Tensor:
    """The sites' coordinates' columns in the latents' flat vector.

    Example:
        >>> site_columns([BoundedSite("a", 1, torch.Size([2]), None),
        ...               BoundedSite("b", 4, torch.Size([]), None)]).tolist()
        [1, 2, 4]
    """
    return torch.cat([torch.arange(s.start, s.start + s.size) for s in sites])


class SupportLocation(nn.Module):
    """Features ``(..., k)``: the predicted flow-space location of the ``k`` coordinates of
    bounded latent sites, from ``(..., p)`` regression features of the data.

    Args:
        sites: the bounded sites (:func:`bounded_sites`).
        regression: the ridge regression of the constrained coordinates on the features.
        low, high: ``(k,)`` the constrained coordinates' range in the fit (the clip).
        mean, std: ``(k,)`` the z-scoring of the unconstrained coordinates.
    """

    def __init__(self, sites: Sequence[BoundedSite], regression: RegressionStandardizer,
                 low: Tensor, high: Tensor, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.sites = list(sites)
        self.regression = regression
        for name, value in (("low", low), ("high", high), ("mean", mean), ("std", std)):
            self.register_buffer(name, value)

    @classmethod
    def fit(cls, sites: Sequence[BoundedSite], theta: Tensor, features: Tensor,
            mean: Tensor, std: Tensor) -> SupportLocation:
        """Fit on ``N`` pairs: ``theta`` ``(N, k)`` the sites' constrained values (flat,
        in order), ``features`` ``(N, p)``; ``mean``/``std`` ``(k,)`` as in the class."""
        regression = RegressionStandardizer.fit(theta, features)
        return cls(sites, regression, theta.min(0).values, theta.max(0).values, mean, std)

    @classmethod
    def from_state(cls, sites: Sequence[BoundedSite], state: dict[str, Tensor]
                   ) -> SupportLocation:
        """A fitted location rebuilt from its ``state_dict`` (the sites come from the
        model: bijections are not saved)."""
        regression = RegressionStandardizer(**{k: state[f"regression.{k}"] for k in (
            "coef", "intercept", "scale", "low", "high")})
        return cls(sites, regression, *(state[k] for k in ("low", "high", "mean", "std")))

    def forward(self, features: Tensor) -> Tensor:
        theta = self.regression.predict(features)
        theta = torch.minimum(torch.maximum(theta, self.low), self.high)
        lead, parts, start = theta.shape[:-1], [], 0
        for site in self.sites:
            value = theta[..., start:start + site.size].reshape(lead + site.shape)
            parts.append(site.transform.inv(value).reshape(lead + (site.size,)))
            start += site.size
        return (torch.cat(parts, -1) - self.mean) / self.std
