"""Deprecated path: ``flowinfer.training`` moved (removed in flowinfer 0.3).

The loop's pieces are in :mod:`flowinfer.train`.
"""

import importlib
import warnings

from flowinfer.train.optim import make_optimizer, progress  # noqa: F401
from flowinfer.train.state import BestState, FitResult, NonFiniteLossWarning  # noqa: F401

__all__ = [
    "FitResult",
    "BestState",
    "NonFiniteLossWarning",
    "progress",
    "make_optimizer",
]
_MODULES = (
    "flowinfer.train.state",
    "flowinfer.train.optim",
)

warnings.warn(
    "flowinfer.training moved to flowinfer.train.state, flowinfer.train.optim; "
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
    raise AttributeError(f"module 'flowinfer.training' has no attribute {name!r}")
