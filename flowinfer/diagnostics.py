"""Deprecated path: ``flowinfer.diagnostics`` moved (removed in flowinfer 0.3).

Its names now live in:
``flowinfer.inference.diagnostics``,
``flowinfer.inference.arviz``,
``flowinfer.inference.neutra``,
``flowinfer.inference.importance``.
"""

import importlib
import warnings

from flowinfer.inference.arviz import to_inference_data  # noqa: F401
from flowinfer.inference.diagnostics import DiagnosticReport, diagnose  # noqa: F401
from flowinfer.inference.importance import importance_draws  # noqa: F401
from flowinfer.inference.neutra import neutra_mcmc  # noqa: F401

__all__ = [
    "DiagnosticReport",
    "diagnose",
    "to_inference_data",
    "neutra_mcmc",
    "importance_draws",
]
_MODULES = (
    "flowinfer.inference.diagnostics",
    "flowinfer.inference.arviz",
    "flowinfer.inference.neutra",
    "flowinfer.inference.importance",
)

warnings.warn(
    "flowinfer.diagnostics moved to flowinfer.inference; "
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
    raise AttributeError(f"module 'flowinfer.diagnostics' has no attribute {name!r}")
