"""Deprecated path: ``flowinfer.distributed`` moved (removed in flowinfer 0.3).

Process-group helpers: :mod:`flowinfer.train.process_group`; ``DataParallelSVI``:
:mod:`flowinfer.inference.svi`.
"""

import importlib
import warnings

from flowinfer.inference.svi import DataParallelSVI  # noqa: F401
from flowinfer.train.process_group import (  # noqa: F401
    all_reduce_gradients,
    broadcast_parameters,
    get_rank,
    get_world_size,
    init_from_env,
    is_main_process,
    rank_device,
)

__all__ = [
    "DataParallelSVI",
    "all_reduce_gradients",
    "broadcast_parameters",
    "get_rank",
    "get_world_size",
    "init_from_env",
    "is_main_process",
    "rank_device",
]
_MODULES = (
    "flowinfer.train.process_group",
    "flowinfer.inference.svi",
    "flowinfer.train.strategy",
)

warnings.warn(
    "flowinfer.distributed moved to flowinfer.train.process_group and "
    "flowinfer.inference.svi; "
    "the old path will be removed in flowinfer 0.3",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str):
    # Private helpers used by older code: found in whichever new module has them.
    for module in _MODULES:
        found = importlib.import_module(module)
        if hasattr(found, name):
            return getattr(found, name)
    raise AttributeError(f"module 'flowinfer.distributed' has no attribute {name!r}")
