"""Deprecated path: ``flowinfer.amortized`` moved (removed in flowinfer 0.3).

Its names now live in:
``flowinfer.vae.posterior``,
``flowinfer.vae.bounds``.
"""

import importlib
import warnings

from flowinfer.vae.bounds import ImportanceBounds, iwae_bound, log_importance_weights  # noqa: F401
from flowinfer.vae.posterior import AmortizedFlowPosterior  # noqa: F401

__all__ = [
    "AmortizedFlowPosterior",
    "ImportanceBounds",
    "iwae_bound",
    "log_importance_weights",
]
_MODULES = (
    "flowinfer.vae.posterior",
    "flowinfer.vae.bounds",
)

warnings.warn(
    "flowinfer.amortized moved to flowinfer.vae; "
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
    raise AttributeError(f"module 'flowinfer.amortized' has no attribute {name!r}")
