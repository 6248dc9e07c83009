"""Deprecated path: ``flowinfer.distributed`` moved (removed in flowinfer 0.3).

Process-group helpers: :mod:`flowinfer.train.process_group`; ``DataParallelSVI``:
:mod:`flowinfer.inference.svi`.
"""

from flowinfer._deprecated import forward
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
__getattr__ = forward("flowinfer.distributed", (
    "flowinfer.train.process_group",
    "flowinfer.inference.svi",
    "flowinfer.train.strategy",
))
