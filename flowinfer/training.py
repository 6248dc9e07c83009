"""Deprecated path: ``flowinfer.training`` moved (removed in flowinfer 0.3).

The loop's pieces are in :mod:`flowinfer.train`.
"""

from flowinfer._deprecated import forward
from flowinfer.train.optim import make_optimizer, progress  # noqa: F401
from flowinfer.train.state import BestState, FitResult, NonFiniteLossWarning  # noqa: F401

__all__ = [
    "FitResult",
    "BestState",
    "NonFiniteLossWarning",
    "progress",
    "make_optimizer",
]
__getattr__ = forward("flowinfer.training", (
    "flowinfer.train.state",
    "flowinfer.train.optim",
))
