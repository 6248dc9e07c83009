"""Deprecated path: ``flowinfer.priors`` moved to ``flowinfer.vae.prior``
(removed in flowinfer 0.3)."""

import importlib
import sys

from flowinfer._deprecated import forward

forward("flowinfer.priors", ("flowinfer.vae.prior",))
sys.modules[__name__] = importlib.import_module("flowinfer.vae.prior")
