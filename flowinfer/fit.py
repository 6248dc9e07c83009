"""Deprecated path: ``flowinfer.fit`` moved (removed in flowinfer 0.3).

``fit_density`` and ``mean_nll`` are in :mod:`flowinfer.train.density`.
"""

import importlib
import warnings

from flowinfer.train.density import fit_density, mean_nll  # noqa: F401

__all__ = [
    "fit_density",
    "mean_nll",
]
_MODULES = (
    "flowinfer.train.density",
)

warnings.warn(
    "flowinfer.fit moved to flowinfer.train.density; "
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
    raise AttributeError(f"module 'flowinfer.fit' has no attribute {name!r}")
