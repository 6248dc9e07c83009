"""Deprecated path: ``flowinfer.reverse_kl`` moved (removed in flowinfer 0.3).

Fitting: :mod:`flowinfer.reverse`; the Pyro-model potential:
:mod:`flowinfer.inference.potential`; the losses: :mod:`flowinfer.train.losses`.
"""

import importlib
import warnings

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
_MODULES = (
    "flowinfer.reverse.fit",
    "flowinfer.reverse.log_z",
    "flowinfer.reverse.sampler",
    "flowinfer.reverse.target",
    "flowinfer.inference.potential",
    "flowinfer.train.losses",
)

warnings.warn(
    "flowinfer.reverse_kl moved to flowinfer.reverse and flowinfer.inference.potential; "
    "the old path will be removed in flowinfer 0.3",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    # Private helpers used by older code: found in whichever new module has them.
    for module in _MODULES:
        found = importlib.import_module(module)
        if hasattr(found, name):
            return getattr(found, name)
    raise AttributeError(f"module 'flowinfer.reverse_kl' has no attribute {name!r}")
