"""Deprecated path: ``flowinfer.diagnostics`` moved (removed in flowinfer 0.3).

Its names now live in:
``flowinfer.inference.diagnostics``,
``flowinfer.inference.arviz``,
``flowinfer.inference.neutra``,
``flowinfer.inference.importance``.
"""

from flowinfer._deprecated import forward
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
__getattr__ = forward("flowinfer.diagnostics", (
    "flowinfer.inference.diagnostics",
    "flowinfer.inference.arviz",
    "flowinfer.inference.neutra",
    "flowinfer.inference.importance",
))
