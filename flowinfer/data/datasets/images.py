"""Real data on disk or in scikit-learn: the 8x8 digits and the MNIST test images, and a split.

Both loaders return the raw integer values (0..16 for the digits, 0..255 for MNIST); a flow
needs them dequantized and mapped to the real line first
(:class:`~flowinfer.data.datasets.LogitPreprocessor`). MNIST is read from the zipped IDX files
in ``../shared/data/mnist`` beside the repository (or ``$FLOWINFER_DATA``); the loader raises
:class:`DataNotFoundError` naming the missing file, so callers can skip cleanly.

Example:
    >>> values, labels = load_digits()
    >>> train, val, test = split(values, (0.8, 0.1, 0.1), seed=0)
    >>> len(train), len(val), len(test)
    (1438, 179, 180)

References:
    LeCun, Bottou, Bengio & Haffner (1998), "Gradient-based learning applied to document
    recognition", Proc. IEEE (MNIST).
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowinfer.checks import check_int, is_number

__all__ = ["DataNotFoundError", "default_data_root", "load_digits", "load_mnist", "split"]


class DataNotFoundError(FileNotFoundError):
    """A data file that the loader needs is missing (the message names the path)."""


def default_data_root() -> Path:
    """``../shared/data`` next to the repository root (or ``$FLOWINFER_DATA`` when set)."""
    env = os.environ.get("FLOWINFER_DATA")
    if env:
        return Path(env)
    # flowinfer/data/datasets/images.py: parents[3] is the repository root; the shared data
    # folder sits beside it.
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def load_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's 8x8 handwritten digits: 1797 images with values 0..16.

    Needs scikit-learn (``pip install "flowinfer[examples]"``); the data ship with it.

    Returns:
        ``(values, labels)``: a ``uint8`` tensor of shape ``(1797, 64)`` and an ``int64``
        tensor of shape ``(1797,)``. Preprocess with ``LogitPreprocessor(levels=17)``.

    Example:
        >>> values, labels = load_digits()
        >>> values.shape, int(values.max())
        (torch.Size([1797, 64]), 16)
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError('load_digits needs scikit-learn: pip install "flowinfer[examples]"'
                          ) from None
    bunch = sk_load_digits()
    values = torch.as_tensor(bunch.data.astype(np.uint8))
    return values, torch.as_tensor(bunch.target.astype(np.int64))


def _read_idx(archive: Path) -> np.ndarray:
    if not archive.is_file():
        raise DataNotFoundError(
            f"MNIST file not found: {archive} (expected the zipped IDX files described in "
            "shared/data/README.md; pass root=... or set FLOWINFER_DATA)"
        )
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise ValueError(f"{archive} should hold one IDX file, found {members}")
            raw = zf.read(members[0])
    except zipfile.BadZipFile as err:
        raise ValueError(f"{archive} is not a readable zip archive ({err})") from None
    # IDX: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    # then one big-endian int32 per dimension, then the data.
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{archive}: not an unsigned-byte IDX file (header {raw[:4]!r})")
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    if len(raw) - offset != math.prod(shape):
        raise ValueError(f"{archive}: header says shape {shape} but holds "
                         f"{len(raw) - offset} values")
    return np.frombuffer(io.BytesIO(raw).getbuffer(), dtype=np.uint8,
                         offset=offset).reshape(shape)


def load_mnist(root: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """The 10,000 MNIST test images and their labels, read from the zipped IDX files.

    Args:
        root: folder holding ``mnist/t10k-images-idx3-ubyte.zip`` and
            ``mnist/t10k-labels-idx1-ubyte.zip`` (or holding the two zip files directly).
            Default: :func:`default_data_root`.

    Returns:
        ``(images, labels)``: a ``uint8`` tensor ``(10000, 28, 28)`` with values 0..255 and
        an ``int64`` tensor ``(10000,)``. Split them yourself with :func:`split` and a seed.

    Raises:
        DataNotFoundError: (a ``FileNotFoundError``) naming the missing file.
        ValueError: a file that is not a zipped IDX file of the expected size.

    Example:
        >>> images, labels = load_mnist()  # doctest: +SKIP
        >>> images.shape, images.dtype  # doctest: +SKIP
        (torch.Size([10000, 28, 28]), torch.uint8)
    """
    if root is not None and not isinstance(root, str | os.PathLike):
        raise TypeError(f"root must be a path or None, got {type(root).__name__}")
    base = default_data_root() if root is None else Path(root)
    folder = base / "mnist" if (base / "mnist").is_dir() else base
    images = _read_idx(folder / "t10k-images-idx3-ubyte.zip")
    labels = _read_idx(folder / "t10k-labels-idx1-ubyte.zip")
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST files in {folder} disagree: images {images.shape}, "
                         f"labels {labels.shape}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def split(
    data: Tensor, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[Tensor, ...]:
    """Shuffle the rows of ``data`` with ``seed`` and cut them into parts of given shares.

    Args:
        data: a tensor with at least one dimension; its rows are split.
        fractions: positive shares summing to 1, one per part.
        seed: seed of the shuffle (a non-negative integer).

    Returns:
        One tensor per share; part sizes are ``n * fraction`` rounded at the cumulative cuts.

    Raises:
        TypeError: ``data`` is not a tensor, ``fractions`` not a sequence of numbers,
            ``seed`` not an integer.
        ValueError: a share is not positive, the shares do not sum to 1, or ``seed < 0``.

    Example:
        >>> train, val, test = split(torch.arange(10), (0.6, 0.2, 0.2), seed=0)
        >>> len(train), len(val), len(test)
        (6, 2, 2)
    """
    if not isinstance(data, Tensor) or data.dim() < 1:
        raise TypeError(f"data must be a tensor with at least one dimension, got "
                        f"{type(data).__name__}")
    if (isinstance(fractions, str) or not isinstance(fractions, Sequence)
            or not all(is_number(f) for f in fractions)):
        raise TypeError(f"fractions must be a sequence of numbers, got {fractions!r}")
    if not fractions or any(not f > 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be positive numbers summing to 1, got {fractions!r}")
    seed = check_int(seed, "seed", 0)
    n = data.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    bounds = [0, *(round(n * c) for c in np.cumsum(fractions)[:-1]), n]
    return tuple(data[order[a:b]] for a, b in zip(bounds[:-1], bounds[1:], strict=True))
