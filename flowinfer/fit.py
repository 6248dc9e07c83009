"""Deprecated path: ``flowinfer.fit`` moved (removed in flowinfer 0.3).

``fit_density`` and ``mean_nll`` are in :mod:`flowinfer.train.density`.
"""

from flowinfer._deprecated import forward
from flowinfer.train.density import fit_density, mean_nll  # noqa: F401

__all__ = [
    "fit_density",
    "mean_nll",
]
__getattr__ = forward("flowinfer.fit", (
    "flowinfer.train.density",
))
