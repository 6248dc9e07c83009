"""Deprecated path: ``flowinfer.targets`` moved to ``flowinfer.data.targets``
(removed in flowinfer 0.3)."""

import importlib
import sys

from flowinfer._deprecated import forward

forward("flowinfer.targets", ("flowinfer.data.targets",))
sys.modules[__name__] = importlib.import_module("flowinfer.data.targets")
