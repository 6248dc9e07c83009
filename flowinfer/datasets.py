"""Deprecated path: ``flowinfer.datasets`` moved to ``flowinfer.data.datasets``
(removed in flowinfer 0.3)."""

import sys
import warnings

from flowinfer.data import datasets as _moved

warnings.warn(
    "flowinfer.datasets moved to flowinfer.data.datasets; "
    "the old path will be removed in flowinfer 0.3",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
