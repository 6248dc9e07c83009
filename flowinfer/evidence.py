"""Deprecated path: ``flowinfer.evidence`` moved to ``flowinfer.inference.evidence``
(removed in flowinfer 0.3)."""

import sys
import warnings

from flowinfer.inference import evidence as _moved

warnings.warn(
    "flowinfer.evidence moved to flowinfer.inference.evidence; "
    "the old path will be removed in flowinfer 0.3",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
