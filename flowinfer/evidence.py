"""Deprecated path: ``flowinfer.evidence`` moved to ``flowinfer.inference.evidence``
(removed in flowinfer 0.3)."""

import importlib
import sys

from flowinfer._deprecated import forward

forward("flowinfer.evidence", ("flowinfer.inference.evidence",))
sys.modules[__name__] = importlib.import_module("flowinfer.inference.evidence")
