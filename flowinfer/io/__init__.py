"""Checkpoints: save a flow (or an object built around one) and load it back, safely.

See :mod:`flowinfer.io.checkpoints` for the file format.
"""

from flowinfer.io.checkpoints import (
    FORMAT,
    FORMAT_VERSION,
    from_checkpoint,
    load,
    load_checkpoint,
    save,
)
from flowinfer.io.files import check_path, from_plain, to_plain

__all__ = ["FORMAT", "FORMAT_VERSION", "save", "load", "load_checkpoint", "from_checkpoint",
           "to_plain", "from_plain", "check_path"]
