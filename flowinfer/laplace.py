"""Deprecated path: ``flowinfer.laplace`` moved to ``flowinfer.inference.laplace``
(removed in flowinfer 0.3)."""

import importlib
import sys

from flowinfer._deprecated import forward

forward("flowinfer.laplace", ("flowinfer.inference.laplace",))
sys.modules[__name__] = importlib.import_module("flowinfer.inference.laplace")
