"""Deprecated path: ``flowinfer.reverse_kl`` moved (removed in flowinfer 0.3).

Fitting: :mod:`flowinfer.reverse`; the Pyro-model potential:
:mod:`flowinfer.inference.potential`; the losses: :mod:`flowinfer.train.losses`.
"""

from flowinfer._deprecated import forward
from flowinfer.inference.potential import PyroModelTarget, constrained_samples  # noqa: F401
from flowinfer.reverse import (  # noqa: F401
    estimate_log_z,
    fit_reverse_kl,
    importance_resample,
    importance_samples,
    reverse_kl_loss,
    sampler_flow,
)
from flowinfer.train.losses import annealing_schedule  # noqa: F401
from flowinfer.transforms.output import BoxMap, StandardizeMap  # noqa: F401

__all__ = [
    "PyroModelTarget",
    "annealing_schedule",
    "constrained_samples",
    "estimate_log_z",
    "fit_reverse_kl",
    "importance_resample",
    "importance_samples",
    "reverse_kl_loss",
    "sampler_flow",
]
__getattr__ = forward("flowinfer.reverse_kl", (
    "flowinfer.reverse.fit",
    "flowinfer.reverse.log_z",
    "flowinfer.reverse.sampler",
    "flowinfer.reverse.target",
    "flowinfer.inference.potential",
    "flowinfer.train.losses",
))
