"""Unnormalized test densities for reverse-KL fitting, with exact ``log Z`` and samplers.

Every target has ``dim``, ``log_prob(x)`` (an unnormalized log density over batches
``(..., dim)``, following ``x``'s dtype and device), ``log_z`` (the exact log normalizing
constant of ``exp(log_prob)``, or None where unknown), ``sample(n, seed=None)`` (exact draws)
and ``bounds`` (a plotting box). :func:`fit_reverse_kl <flowinfer.reverse.fit.fit_reverse_kl>`
and :func:`estimate_log_z <flowinfer.reverse.log_z.estimate_log_z>` take them directly.

========================  ====  ==========================================================
target                    dim   log Z
========================  ====  ==========================================================
``energy("U1")``-``U4``   2     by quadrature (the density is zero outside ``[-4, 4]^2``)
:class:`Banana`           2     ``log(2 pi s1 s2)`` (closed form)
:class:`Funnel`           10    0 (normalized)
:func:`ring_of_gaussians` 2     0 (a normalized mixture of 8 modes on a circle)
:func:`gmm40`             2     0 (40 modes, means uniform on ``[-40, 40]^2``)
========================  ====  ==========================================================

One name space for :mod:`~flowinfer.data.targets.energies` (U1-U4),
:mod:`~flowinfer.data.targets.curved` (banana, funnel), :mod:`~flowinfer.data.targets.mixtures`
(Gaussian mixtures) and :mod:`~flowinfer.data.targets.catalog` (:func:`make_target`);
``fi.targets`` is this package. The mixtures also measure mode coverage
(:meth:`GaussianMixture.mode_coverage`): the share of modes that receive at least half of
their true mass in a set of samples.

Example:
    >>> make_target("funnel").log_z
    0.0

References:
    Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows", ICML (U1-U4).
    Haario, Saksman & Tamminen (1999), "Adaptive proposal distribution for random walk
    Metropolis algorithm", Computational Statistics (the banana).
    Neal (2003), "Slice Sampling", Annals of Statistics (the funnel).
    Midgley et al. (2023), "Flow Annealed Importance Sampling Bootstrap", ICLR (40 modes).
"""

from flowinfer.data.targets.base import Target
from flowinfer.data.targets.catalog import available_targets, make_target
from flowinfer.data.targets.curved import Banana, Funnel
from flowinfer.data.targets.energies import RezendeEnergy, energy
from flowinfer.data.targets.mixtures import GaussianMixture, gmm40, ring_of_gaussians

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
