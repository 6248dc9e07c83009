"""Deprecated path: ``flowinfer.priors`` moved to ``flowinfer.vae.prior``
(removed in flowinfer 0.3)."""

import sys
import warnings

from flowinfer.vae import prior as _moved

warnings.warn(
    "flowinfer.priors moved to flowinfer.vae.prior; "
    "the old path will be removed in flowinfer 0.3",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
