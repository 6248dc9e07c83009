"""Deprecated path: ``flowinfer.guides`` moved (removed in flowinfer 0.3).

Its names now live in:
``flowinfer.inference.autoflow``,
``flowinfer.inference.amortized_guide``,
``flowinfer.inference.sites``.
"""

from flowinfer._deprecated import forward
from flowinfer.inference.amortized_guide import AutoAmortizedFlow  # noqa: F401
from flowinfer.inference.autoflow import AutoFlow  # noqa: F401
from flowinfer.inference.sites import GUIDE_FLOW_DEFAULTS, init_to_median_or_zero  # noqa: F401

__all__ = [
    "AutoFlow",
    "AutoAmortizedFlow",
    "GUIDE_FLOW_DEFAULTS",
    "init_to_median_or_zero",
]
__getattr__ = forward("flowinfer.guides", (
    "flowinfer.inference.autoflow",
    "flowinfer.inference.amortized_guide",
    "flowinfer.inference.sites",
))
