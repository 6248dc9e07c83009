"""File-level pieces of checkpoints: plain values, paths, atomic writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["to_plain", "from_plain", "check_path", "atomic_torch_save"]


def to_plain(value: Any, where: str, allow_tensors: bool) -> Any:
    """Tuples become lists; anything weights_only loading would refuse raises TypeError."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):
        return [to_plain(v, f"{where}[{i}]", allow_tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where} has a key of type {type(k).__name__}; keys must be "
                                 "strings or integers")
            out[k] = to_plain(v, f"{where}[{k!r}]", allow_tensors)
        return out
    if allow_tensors and isinstance(value, torch.Tensor):
        return value.detach()
    kinds = "None, bool, int, float, str, lists, tuples, dicts" + (
        " and tensors" if allow_tensors else "")
    raise TypeError(
        f"{where} is a {type(value).__name__}; a checkpoint holds only {kinds} (so it can be "
        "loaded with weights_only=True)"
    )


def from_plain(value: Any) -> Any:
    """Lists (the stored form of tuples) become tuples again, recursively through dicts.

    Example:
        >>> from_plain({"hidden": [64, 64], "bins": 8})
        {'hidden': (64, 64), 'bins': 8}
    """
    # Hyper-parameters were tuples when the flow was built (hidden=(64, 64)); lists were
    # only the storage form.
    if isinstance(value, list):
        return tuple(from_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: from_plain(v) for k, v in value.items()}
    return value


def check_path(path: Any, name: str = "path") -> Path:
    """``path`` as a ``Path``; ``TypeError`` naming the argument ``name`` unless str or path-like.

    Example:
        >>> check_path("model.pt").name
        'model.pt'
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def atomic_torch_save(obj: Any, path: Path, folder: Path) -> None:
    # Same folder as the destination: os.replace is then a rename on one file system, which
    # is atomic; a crash leaves either the old file or the new one, never half of one.
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable on POSIX; not possible (nor needed) on Windows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
