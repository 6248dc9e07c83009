"""Deprecated path: ``flowinfer.laplace`` moved to ``flowinfer.inference.laplace``
(removed in flowinfer 0.3)."""

import sys
import warnings

from flowinfer.inference import laplace as _moved

warnings.warn(
    "flowinfer.laplace moved to flowinfer.inference.laplace; "
    "the old path will be removed in flowinfer 0.3",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
