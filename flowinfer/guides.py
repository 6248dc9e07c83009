"""Deprecated path: ``flowinfer.guides`` moved (removed in flowinfer 0.3).

Its names now live in:
``flowinfer.inference.autoflow``,
``flowinfer.inference.amortized_guide``,
``flowinfer.inference.sites``.
"""

import importlib
import warnings

from flowinfer.inference.amortized_guide import AutoAmortizedFlow  # noqa: F401
from flowinfer.inference.autoflow import AutoFlow  # noqa: F401
from flowinfer.inference.sites import GUIDE_FLOW_DEFAULTS, init_to_median_or_zero  # noqa: F401

__all__ = [
    "AutoFlow",
    "AutoAmortizedFlow",
    "GUIDE_FLOW_DEFAULTS",
    "init_to_median_or_zero",
]
_MODULES = (
    "flowinfer.inference.autoflow",
    "flowinfer.inference.amortized_guide",
    "flowinfer.inference.sites",
)

warnings.warn(
    "flowinfer.guides moved to flowinfer.inference; "
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
    raise AttributeError(f"module 'flowinfer.guides' has no attribute {name!r}")
