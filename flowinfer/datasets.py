"""Deprecated path: ``flowinfer.datasets`` moved to ``flowinfer.data.datasets``
(removed in flowinfer 0.3)."""

import importlib
import sys

from flowinfer._deprecated import forward

forward("flowinfer.datasets", ("flowinfer.data.datasets",))
sys.modules[__name__] = importlib.import_module("flowinfer.data.datasets")
