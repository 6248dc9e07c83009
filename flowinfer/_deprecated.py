"""What the deprecated release-0.1 module paths share: the warning and the forwarding.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     lookup = forward("flowinfer.old", ("flowinfer.checks",))
    >>> lookup("check_int").__name__, caught[0].category.__name__
    ('check_int', 'DeprecationWarning')
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["forward"]


def forward(old: str, modules: Sequence[str]) -> Callable[[str], Any]:
    """Warn that ``old`` moved to ``modules``; return a module ``__getattr__`` that finds any
    name (private helpers of older code too) in whichever of them has it."""
    warnings.warn(f"{old} moved to {' and '.join(modules)}; the old path will be removed in "
                  "flowinfer 0.3", DeprecationWarning, stacklevel=3)

    def lookup(name: str) -> Any:
        for module in modules:
            found = importlib.import_module(module)
            if hasattr(found, name):
                return getattr(found, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return lookup
