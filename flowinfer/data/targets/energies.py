"""Unnormalized test densities for reverse-KL fitting, with exact ``log Z`` and samplers.

Every target has ``dim``, ``log_prob(x)`` (an unnormalized log density over batches
``(..., dim)``, following ``x``'s dtype and device), ``log_z`` (the exact log normalizing
constant of ``exp(log_prob)``, or None where unknown), ``sample(n, seed=None)`` (exact draws)
and ``bounds`` (a plotting box). :func:`fit_reverse_kl <flowinfer.reverse_kl.fit_reverse_kl>`
and :func:`estimate_log_z <flowinfer.reverse_kl.estimate_log_z>` take them directly.

========================  ====  ==========================================================
target                    dim   log Z
========================  ====  ==========================================================
``energy("U1")``-``U4``   2     by quadrature (the density is zero outside ``[-4, 4]^2``)
:class:`Banana`           2     ``log(2 pi s1 s2)`` (closed form)
:class:`Funnel`           10    0 (normalized)
:func:`ring_of_gaussians` 2     0 (a normalized mixture of 8 modes on a circle)
:func:`gmm40`             2     0 (40 modes, means uniform on ``[-40, 40]^2``)
========================  ====  ==========================================================

The mixtures also measure mode coverage (:meth:`GaussianMixture.mode_coverage`): the share of
modes that receive at least half of their true mass in a set of samples.

References:
    Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows", ICML (U1-U4).
    Haario, Saksman & Tamminen (1999), "Adaptive proposal distribution for random walk
    Metropolis algorithm", Computational Statistics (the banana).
    Neal (2003), "Slice Sampling", Annals of Statistics (the funnel).
    Midgley et al. (2023), "Flow Annealed Importance Sampling Bootstrap", ICLR (40 modes).
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Banana",
    "Funnel",
    "GaussianMixture",
    "RezendeEnergy",
    "Target",
    "available_targets",
    "energy",
    "gmm40",
    "make_target",
    "ring_of_gaussians",
]

_LOG_2PI = math.log(2 * math.pi)


def _check_n(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return n


def _generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    return torch.Generator().manual_seed(seed)


class Target:
    """Base class: an unnormalized density on ``R^dim`` (subclasses set the attributes).

    Attributes:
        dim: event size.
        name: short name.
        log_z: exact ``log`` of the integral of ``exp(log_prob)``, or None when unknown.
        bounds: ``(low, high)`` of a box that holds nearly all the mass (for plots).
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


# ------------------------------------------------------------------------------ U1-U4
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
        if not isinstance(kind, str) or kind.upper() not in self._KINDS:
            raise ValueError(f"kind must be one of {self._KINDS}, got {kind!r}")
        if isinstance(box, bool) or not isinstance(box, int | float) or not (
            math.isfinite(box) and box > 0
        ):
            raise ValueError(f"box must be a positive finite number, got {box!r}")
        self.kind = kind.upper()
        self.box = float(box)
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
        n = _check_n(n)
        gen = _generator(seed)
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


# ------------------------------------------------------------------------------ banana
class Banana(Target):
    """A curved 2-D density: ``x1 ~ N(0, s1^2)``, ``x2 | x1 ~ N(c (x1^2 - s1^2), s2^2)``.

    The twisted Gaussian of Haario et al. (1999), written so that ``x2`` has mean zero.
    ``log_prob`` drops the normal constants, so ``log_z = log(2 pi s1 s2)``.

    Args:
        s1, s2: standard deviations of ``x1`` and of ``x2`` given ``x1`` (positive).
        curvature: ``c``.

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
        for name, value, positive in (("s1", s1, True), ("s2", s2, True),
                                      ("curvature", curvature, False)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and (value > 0 or not positive)
            ):
                kind = "a positive finite" if positive else "a finite"
                raise ValueError(f"{name} must be {kind} number, got {value!r}")
        self.s1, self.s2, self.curvature = float(s1), float(s2), float(curvature)
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
        n = _check_n(n)
        eps = torch.randn(n, 2, generator=_generator(seed))
        x1 = self.s1 * eps[:, 0]
        x2 = self.curvature * (x1.square() - self.s1**2) + self.s2 * eps[:, 1]
        return torch.stack([x1, x2], -1)


# ------------------------------------------------------------------------------ funnel
class Funnel(Target):
    """Neal's funnel: ``v ~ N(0, scale^2)``, ``x_i | v ~ N(0, exp(v))`` for ``i < dim``.

    Coordinates are ``(v, x_1, ..., x_{dim-1})``; ``log_prob`` is normalized, so ``log_z = 0``.
    The neck (``v`` very negative) is hard for any sampler; reverse KL tends to cut it off,
    which shows as a heavy importance-weight tail (a high PSIS k-hat).

    Args:
        dim: total dimension (at least 2; default 10 as in Neal's paper).
        scale: standard deviation of ``v`` (default 3).

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
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not (
            math.isfinite(scale) and scale > 0
        ):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        self.dim, self.scale = dim, float(scale)
        self.name = "funnel"
        self.bounds = (-3.0 * self.scale, 3.0 * self.scale)

    @property
    def log_z(self) -> float:
        return 0.0

    def log_prob(self, x: Tensor) -> Tensor:
        x = self._check(x)
        v, rest = x[..., 0], x[..., 1:]
        log_pv = -0.5 * (v / self.scale) ** 2 - math.log(self.scale) - 0.5 * _LOG_2PI
        k = self.dim - 1
        log_px = -0.5 * (rest.square().sum(-1) * torch.exp(-v) + k * v + k * _LOG_2PI)
        return log_pv + log_px

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        n = _check_n(n)
        eps = torch.randn(n, self.dim, generator=_generator(seed))
        v = self.scale * eps[:, :1]
        return torch.cat([v, eps[:, 1:] * torch.exp(v / 2)], -1)


# ------------------------------------------------------------------------------ mixtures
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

    Example:
        >>> mix = GaussianMixture(torch.tensor([[-3.0], [3.0]]), 1.0)
        >>> mix.mode_coverage(torch.full((10, 1), -3.0))   # all samples in one of 2 modes
        0.5

    References:
        Midgley et al. (2023), "Flow Annealed Importance Sampling Bootstrap", ICLR.
    """

    def __init__(self, means: Tensor, scales: float | Tensor = 1.0,
                 weights: Tensor | None = None, name: str = "mixture") -> None:
        if not isinstance(means, Tensor) or means.dim() != 2 or means.shape[0] < 1:
            raise ValueError(f"means must be a tensor of shape (K, dim), got "
                             f"{getattr(means, 'shape', type(means).__name__)}")
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
                - self.dim * (scales.log() + 0.5 * _LOG_2PI))

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self._component_log_probs(self._check(x)), -1)

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        n = _check_n(n)
        gen = _generator(seed)
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
            if not isinstance(log_weights, Tensor) or log_weights.shape != x.shape[:1]:
                raise ValueError(f"log_weights must be a tensor of shape ({x.shape[0]},), got "
                                 f"{getattr(log_weights, 'shape', type(log_weights).__name__)}")
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
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (
            0 < threshold <= 1
        ):
            raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
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
    if isinstance(num_modes, bool) or not isinstance(num_modes, int) or num_modes < 1:
        raise ValueError(f"num_modes must be a positive integer, got {num_modes!r}")
    for name, value in (("radius", radius), ("scale", scale)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value > 0
        ):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
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
    gen = _generator(seed)
    means = (torch.rand(num_modes, 2, generator=gen) * 2 - 1) * loc_scaling
    scale = math.log1p(math.e)  # softplus(1)
    return GaussianMixture(means, scale, name="gmm40")


_FACTORIES = {
    "u1": lambda: energy("U1"),
    "u2": lambda: energy("U2"),
    "u3": lambda: energy("U3"),
    "u4": lambda: energy("U4"),
    "banana": Banana,
    "funnel": Funnel,
    "ring8": ring_of_gaussians,
    "gmm40": gmm40,
}


def available_targets() -> list[str]:
    """Names accepted by :func:`make_target`."""
    return list(_FACTORIES)


def make_target(name: str) -> Target:
    """A built-in target with its default settings, by name (see :func:`available_targets`).

    Example:
        >>> make_target("banana").dim
        2
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in _FACTORIES:
        raise ValueError(f"name must be one of {available_targets()}, got {name!r}")
    return _FACTORIES[key]()
