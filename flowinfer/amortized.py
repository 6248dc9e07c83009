"""Deprecated path: ``flowinfer.amortized`` moved (removed in flowinfer 0.3).

Its names now live in:
``flowinfer.vae.posterior``,
``flowinfer.vae.bounds``.
"""

from flowinfer._deprecated import forward
from flowinfer.vae.bounds import ImportanceBounds, iwae_bound, log_importance_weights  # noqa: F401
from flowinfer.vae.posterior import AmortizedFlowPosterior  # noqa: F401

__all__ = [
    "AmortizedFlowPosterior",
    "ImportanceBounds",
    "iwae_bound",
    "log_importance_weights",
]
__getattr__ = forward("flowinfer.amortized", (
    "flowinfer.vae.posterior",
    "flowinfer.vae.bounds",
))
