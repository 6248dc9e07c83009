"""Gaussian mixtures as multi-modal targets, and the mode-coverage measure they allow.

``log Z = 0`` for every mixture (they are normalized). :meth:`GaussianMixture.mode_coverage`
is the share of modes that receive at least half of their true mass in a set of samples.

Example:
    >>> ring_of_gaussians().num_modes, gmm40().num_modes
    (8, 40)

References:
    Midgley et al. (2023), "Flow Annealed Importance Sampling Bootstrap", ICLR (40 modes).
"""

from __future__ import annotations

import math
from functools import cached_property

import torch
from torch import Tensor

from flowinfer.checks import check_int, check_number
from flowinfer.data.targets.base import LOG_2PI, Target, check_sample_size, make_generator

__all__ = ["GaussianMixture", "gmm40", "ring_of_gaussians"]


class GaussianMixture(Target):
    """A normalized mixture of isotropic Gaussians, ``sum_k pi_k N(x; mu_k, s_k^2 I)``.

    ``log_z = 0``. Modes are the components; :meth:`mode_masses` gives the share of a set of
    samples that each component claims (the component of highest responsibility), and
    :meth:`mode_coverage` the fraction of modes whose share is at least ``threshold`` times
    their true share (the share the same rule gives to exact draws; equal to ``pi_k`` when the
    modes are well apart).

    Args:
        means: ``(K, dim)`` component means.
        scales: component standard deviations, a number or ``K`` numbers (positive).
        weights: mixture weights, ``K`` positive numbers (normalized here); None: equal.
        name: short name.

    Raises:
        TypeError: ``means`` is not a floating-point tensor.
        ValueError: ``means`` not of shape ``(K, dim)`` or not finite; ``scales`` or
            ``weights`` not positive and finite, or of the wrong size.

    Example:
        >>> mix = GaussianMixture(torch.tensor([[-3.0], [3.0]]), 1.0)
        >>> mix.mode_coverage(torch.full((10, 1), -3.0))   # all samples in one of 2 modes
        0.5

    References:
        Midgley et al. (2023), "Flow Annealed Importance Sampling Bootstrap", ICLR.
    """

    def __init__(self, means: Tensor, scales: float | Tensor = 1.0,
                 weights: Tensor | None = None, name: str = "mixture") -> None:
        if not isinstance(means, Tensor) or not means.is_floating_point():
            raise TypeError(f"means must be a floating-point tensor of shape (K, dim), got "
                            f"{getattr(means, 'dtype', type(means).__name__)}")
        if means.dim() != 2 or means.shape[0] < 1:
            raise ValueError(f"means must be a tensor of shape (K, dim), got "
                             f"{tuple(means.shape)}")
        if not torch.isfinite(means).all():
            raise ValueError("means must be finite")
        k = means.shape[0]
        scales = torch.as_tensor(scales, dtype=means.dtype).expand(k).clone()
        if not (torch.isfinite(scales).all() and (scales > 0).all()):
            raise ValueError(f"scales must be positive and finite, got {scales.tolist()}")
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=means.dtype)
        weights = torch.as_tensor(weights, dtype=means.dtype)
        if weights.shape != (k,) or not (torch.isfinite(weights).all() and (weights > 0).all()):
            raise ValueError(f"weights must be {k} positive finite numbers, got "
                             f"{weights.tolist() if weights.dim() <= 1 else weights.shape}")
        self.means, self.scales = means, scales
        self.weights = weights / weights.sum()
        self.dim = means.shape[1]
        self.num_modes = k
        self.name = name
        spread = float((means.abs() + 4 * scales[:, None]).max())
        self.bounds = (-spread, spread)

    @property
    def log_z(self) -> float:
        return 0.0

    def _component_log_probs(self, x: Tensor) -> Tensor:
        means = self.means.to(x)
        scales = self.scales.to(x)
        sq = (x[..., None, :] - means).square().sum(-1)
        return (self.weights.to(x).log() - 0.5 * sq / scales.square()
                - self.dim * (scales.log() + 0.5 * LOG_2PI))

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self._component_log_probs(self._check(x)), -1)

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        n = check_sample_size(n)
        gen = make_generator(seed)
        idx = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        eps = torch.randn(n, self.dim, generator=gen, dtype=self.means.dtype)
        return self.means[idx] + self.scales[idx, None] * eps

    def mode_masses(self, x: Tensor, log_weights: Tensor | None = None) -> Tensor:
        """Share of ``x`` (weighted by ``softmax(log_weights)`` if given) claimed by each mode.

        Returns a float64 tensor of ``num_modes`` shares summing to one.
        """
        x = self._check(x)
        if x.dim() != 2:
            raise ValueError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        owner = self._component_log_probs(x).argmax(-1)
        # Shares are summed in float64: a float32 sum over 10^5 samples drifts by ~1e-5.
        if log_weights is None:
            w = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=torch.float64,
                           device=x.device)
        else:
            if not isinstance(log_weights, Tensor):
                raise TypeError(f"log_weights must be a torch.Tensor or None, got "
                                f"{type(log_weights).__name__}")
            if log_weights.shape != x.shape[:1]:
                raise ValueError(f"log_weights must have shape ({x.shape[0]},), got "
                                 f"{tuple(log_weights.shape)}")
            if torch.isnan(log_weights).any() or torch.isposinf(log_weights).any():
                raise ValueError("log_weights contains NaN or +inf")
            w = torch.softmax(log_weights.to(torch.float64), 0)
        masses = torch.zeros(self.num_modes, dtype=torch.float64, device=x.device)
        return masses.index_add_(0, owner, w)

    @cached_property
    def true_mode_masses(self) -> Tensor:
        """Each mode's share of exact draws under the same rule (200,000 draws, seed 0)."""
        return self.mode_masses(self.sample(200_000, seed=0))

    def mode_coverage(self, x: Tensor, log_weights: Tensor | None = None,
                      threshold: float = 0.5) -> float:
        """Fraction of modes whose share of ``x`` is at least ``threshold`` of their true share.

        Args:
            x: samples, shape ``(n, dim)``.
            log_weights: optional log importance weights of ``x`` (self-normalised).
            threshold: in ``(0, 1]``; 0.5 is "at least half the true mass".
        """
        threshold = check_number(threshold, "threshold", low=0.0, high=1.0, low_open=True)
        got = self.mode_masses(x, log_weights)
        want = self.true_mode_masses.to(got)
        return float((got >= threshold * want).double().mean())


def ring_of_gaussians(num_modes: int = 8, radius: float = 5.0,
                      scale: float = 0.5) -> GaussianMixture:
    """Equal-weight modes ``N(mu_k, scale^2 I)`` at angles ``2 pi k / num_modes`` on a circle.

    With the defaults neighbouring means are 3.8 apart, 7.7 standard deviations: a flow that
    starts in one mode has no gradient pulling it to the next.

    Example:
        >>> ring = ring_of_gaussians()
        >>> ring.num_modes, ring.log_z
        (8, 0.0)
    """
    num_modes = check_int(num_modes, "num_modes")
    radius = check_number(radius, "radius", low=0.0, low_open=True)
    scale = check_number(scale, "scale", low=0.0, low_open=True)
    angle = 2 * math.pi * torch.arange(num_modes, dtype=torch.get_default_dtype()) / num_modes
    means = radius * torch.stack([angle.cos(), angle.sin()], -1)
    return GaussianMixture(means, scale, name=f"ring{num_modes}")


def gmm40(seed: int = 0, num_modes: int = 40, loc_scaling: float = 40.0) -> GaussianMixture:
    """The 2-D mixture of the FAB paper: 40 equal-weight modes, means uniform on [-40, 40]^2.

    As in Midgley et al. (2023), every component has standard deviation
    ``softplus(1) = 1.313`` in each coordinate. The means are drawn with a fixed ``seed``
    (torch's generator), so the target is the same everywhere.

    Example:
        >>> mix = gmm40()
        >>> mix.num_modes, bool(mix.means.abs().max() <= 40)
        (40, True)

    References:
        Midgley et al. (2023), "Flow Annealed Importance Sampling Bootstrap", ICLR.
    """
    gen = make_generator(seed)
    num_modes = check_int(num_modes, "num_modes")
    loc_scaling = check_number(loc_scaling, "loc_scaling", low=0.0, low_open=True)
    means = (torch.rand(num_modes, 2, generator=gen) * 2 - 1) * loc_scaling
    scale = math.log1p(math.e)  # softplus(1)
    return GaussianMixture(means, scale, name="gmm40")
