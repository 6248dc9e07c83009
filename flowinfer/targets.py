"""Deprecated path: ``flowinfer.targets`` moved to ``flowinfer.data.targets``
(removed in flowinfer 0.3)."""

import sys
import warnings

from flowinfer.data import targets as _moved

warnings.warn(
    "flowinfer.targets moved to flowinfer.data.targets; "
    "the old path will be removed in flowinfer 0.3",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
