"""Data for density estimation: 2-D toy sets, scikit-learn's digits, the MNIST test images.

The toy sets are those of the flow literature (FFJORD, BNAF, NSF): ``moons``, ``8gaussians``,
``checkerboard``, ``2spirals``, ``pinwheel``, ``rings`` and ``circles``, drawn with a seed.
Two of them have a density known in closed form (:func:`toy_log_prob`), so the best possible
test negative log-likelihood is their entropy (:func:`toy_entropy`): about 2.84 nats for
``8gaussians`` and ``ln 32 = 3.466`` nats for ``checkerboard``. The gap between a flow's test
NLL and that entropy is the KL divergence from the data to the flow.

Discrete data (pixel intensities) have no density; :class:`LogitPreprocessor` adds uniform
dequantization noise and maps the values to the real line with a logit, and keeps the
log-Jacobian of that map so bits per dimension are reported for the original values.

Example:
    >>> x = make_toy("moons", 5000, seed=0)
    >>> x.shape
    torch.Size([5000, 2])

References:
    Grathwohl et al. (2019), "FFJORD: Free-form Continuous Dynamics for Scalable Reversible
    Generative Models", ICLR (the toy sets).
    Theis, van den Oord & Bethge (2016), "A note on the evaluation of generative models",
    ICLR (dequantization and bits per dimension).
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions.transforms import AffineTransform, ComposeTransform, SigmoidTransform

__all__ = [
    "TOY_DATASETS",
    "make_toy",
    "toy_log_prob",
    "toy_entropy",
    "load_digits",
    "load_mnist",
    "split",
    "LogitPreprocessor",
    "DataNotFoundError",
    "default_data_root",
]


# ------------------------------------------------------------------------------ toy sets
def _uniform(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _normal(shape: tuple[int, ...], g: torch.Generator) -> Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _moons(n: int, g: torch.Generator) -> Tensor:
    # Two interleaved half circles with noise 0.1, scaled by 2 and centred (as in FFJORD).
    n_out = n // 2
    t = math.pi * _uniform(n, g)
    outer = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    inner = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)
    upper = torch.arange(n) < n_out
    x = torch.where(upper[:, None], outer, inner) + 0.1 * _normal((n, 2), g)
    return 2 * x - torch.tensor([1.0, 0.2], dtype=torch.float64)


# 8 gaussians: centres on a circle of radius 4/sqrt(2), standard deviation 0.5/sqrt(2).
_8G_RADIUS = 4 / math.sqrt(2)
_8G_STD = 0.5 / math.sqrt(2)


def _8g_centres() -> Tensor:
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    return _8G_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def _8gaussians(n: int, g: torch.Generator) -> Tensor:
    which = torch.randint(0, 8, (n,), generator=g)
    return _8g_centres()[which] + _8G_STD * _normal((n, 2), g)


def _8gaussians_log_prob(x: Tensor) -> Tensor:
    centres = _8g_centres().to(x)
    sq = ((x[..., None, :] - centres) ** 2).sum(-1)
    log_comp = -sq / (2 * _8G_STD**2) - math.log(2 * math.pi * _8G_STD**2)
    return torch.logsumexp(log_comp, dim=-1) - math.log(8)


# Checkerboard: uniform on the 8 squares of side 2 in [-4, 4]^2 whose index sum is even.
def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    col = torch.randint(0, 4, (n,), generator=g)
    row = 2 * torch.randint(0, 2, (n,), generator=g) + (col % 2)
    corner = torch.stack([col, row], dim=1).double() * 2 - 4
    return corner + 2 * torch.rand((n, 2), generator=g, dtype=torch.float64)


def _checkerboard_log_prob(x: Tensor) -> Tensor:
    cell = torch.floor((x + 4) / 2)
    inside = ((x >= -4) & (x < 4)).all(-1) & ((cell.sum(-1) % 2) == 0)
    out = torch.full(x.shape[:-1], -math.log(32), dtype=x.dtype, device=x.device)
    return out.masked_fill(~inside, -math.inf)


def _2spirals(n: int, g: torch.Generator) -> Tensor:
    half = (n + 1) // 2
    turn = torch.sqrt(_uniform(half, g)) * (3 * math.pi)
    arm = torch.stack([-torch.cos(turn) * turn, torch.sin(turn) * turn], dim=1)
    arm = arm + 0.5 * torch.rand((half, 2), generator=g, dtype=torch.float64)
    x = torch.cat([arm, -arm])[:n] / 3
    return x + 0.1 * _normal((n, 2), g)


def _pinwheel(n: int, g: torch.Generator) -> Tensor:
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    label = torch.arange(n) % arms
    feat = _normal((n, 2), g) * torch.tensor([radial_std, tangential_std], dtype=torch.float64)
    feat[:, 0] += 1.0
    angle = label.double() * (2 * math.pi / arms) + rate * torch.exp(feat[:, 0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotated = torch.stack([cos * feat[:, 0] - sin * feat[:, 1],
                           sin * feat[:, 0] + cos * feat[:, 1]], dim=1)
    return 2 * rotated


def _rings(n: int, g: torch.Generator) -> Tensor:
    # Four concentric rings of radius 0.75 to 3, points spread in proportion to the radius.
    radii = torch.tensor([0.75, 1.5, 2.25, 3.0], dtype=torch.float64)
    which = torch.multinomial(radii, n, replacement=True, generator=g)
    t = 2 * math.pi * _uniform(n, g)
    x = radii[which, None] * torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    return x + 0.08 * _normal((n, 2), g)


def _circles(n: int, g: torch.Generator) -> Tensor:
    # Two concentric circles of radius 3 and 1.5 (scikit-learn's make_circles, factor 0.5).
    t = 2 * math.pi * _uniform(n, g)
    radius = torch.where(torch.arange(n) < n // 2, 3.0, 1.5).double()
    x = radius[:, None] * torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    return x + 0.24 * _normal((n, 2), g)


_TOY: dict[str, Callable[[int, torch.Generator], Tensor]] = {
    "moons": _moons,
    "8gaussians": _8gaussians,
    "checkerboard": _checkerboard,
    "2spirals": _2spirals,
    "pinwheel": _pinwheel,
    "rings": _rings,
    "circles": _circles,
}
_TOY_LOG_PROB: dict[str, Callable[[Tensor], Tensor]] = {
    "8gaussians": _8gaussians_log_prob,
    "checkerboard": _checkerboard_log_prob,
}
TOY_DATASETS: tuple[str, ...] = tuple(_TOY)
"""Names accepted by :func:`make_toy`."""


def _check_toy_name(name: Any, table: dict[str, Any]) -> str:
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"name must be one of {tuple(table)}, got {name!r}")
    return name


def make_toy(
    name: str,
    n: int,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> Tensor:
    """Draw ``n`` points of a 2-D toy data set.

    Args:
        name: one of :data:`TOY_DATASETS` (``"moons"``, ``"8gaussians"``, ``"checkerboard"``,
            ``"2spirals"``, ``"pinwheel"``, ``"rings"``, ``"circles"``).
        n: number of points.
        seed: the same seed gives the same points; None draws from torch's global generator
            (so ``torch.manual_seed`` makes it repeatable).
        dtype: floating dtype of the result (default: torch's default dtype).
        device: device of the result (default: CPU).

    Returns:
        An ``(n, 2)`` tensor.

    Raises:
        ValueError: unknown ``name``, or ``n`` not a positive integer.

    Example:
        >>> x = make_toy("8gaussians", 1000, seed=1)
        >>> x.shape, bool(torch.equal(x, make_toy("8gaussians", 1000, seed=1)))
        (torch.Size([1000, 2]), True)

    References:
        Grathwohl et al. (2019), "FFJORD: Free-form Continuous Dynamics for Scalable
        Reversible Generative Models", ICLR.
    """
    name = _check_toy_name(name, _TOY)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()))
    g = torch.Generator().manual_seed(seed)
    # Shuffle the rows: some generators emit one component after another, and the first k
    # rows should be a fair sample of k points.
    x = _TOY[name](n, g)[torch.randperm(n, generator=g)]
    return x.to(dtype=dtype or torch.get_default_dtype(), device=device)


def toy_log_prob(name: str, x: Any) -> Tensor:
    """Exact log density of the toy sets that have one (``8gaussians``, ``checkerboard``).

    Args:
        name: ``"8gaussians"`` or ``"checkerboard"``.
        x: points of shape ``(..., 2)``.

    Returns:
        ``log p(x)`` of shape ``x.shape[:-1]`` (``-inf`` off the checkerboard's support).

    Example:
        >>> round(float(toy_log_prob("checkerboard", torch.tensor([[0.5, 0.5]]))[0]), 4)
        -3.4657
    """
    name = _check_toy_name(name, _TOY_LOG_PROB)
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.double()
    if x.dim() < 1 or x.shape[-1] != 2:
        raise ValueError(f"x must have shape (..., 2), got {tuple(x.shape)}")
    return _TOY_LOG_PROB[name](x)


@cache
def toy_entropy(name: str) -> float:
    """Differential entropy ``-E[log p(x)]`` in nats: the best possible test NLL.

    ``checkerboard`` is uniform on an area of 32, so its entropy is ``ln 32``. For
    ``8gaussians`` it is integrated numerically on a fine grid (the components overlap only in
    far tails, so it is close to ``ln 8 + 1 + ln(2 pi sigma^2) = 2.838``).

    Example:
        >>> round(toy_entropy("checkerboard"), 4)
        3.4657
    """
    name = _check_toy_name(name, _TOY_LOG_PROB)
    if name == "checkerboard":
        return math.log(32)
    # Midpoint rule on [-6, 6]^2: the density is smooth and negligible at the edge, so the
    # quadrature error is far below 1e-6 nats.
    m, lo, hi = 800, -6.0, 6.0
    h = (hi - lo) / m
    axis = lo + h * (torch.arange(m, dtype=torch.float64) + 0.5)
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    logp = _8gaussians_log_prob(torch.stack([gx, gy], -1).reshape(-1, 2))
    return float(-(torch.exp(logp) * logp).sum() * h * h)


# ------------------------------------------------------------------------------ real data
class DataNotFoundError(FileNotFoundError):
    """A data file that the loader needs is missing (the message names the path)."""


def default_data_root() -> Path:
    """``../shared/data`` next to the repository root (or ``$FLOWINFER_DATA`` when set)."""
    env = os.environ.get("FLOWINFER_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
    data: Tensor, fractions: tuple[float, ...] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[Tensor, ...]:
    """Shuffle the rows of ``data`` with ``seed`` and cut them into parts of given shares.

    Example:
        >>> train, val, test = split(torch.arange(10), (0.6, 0.2, 0.2), seed=0)
        >>> len(train), len(val), len(test)
        (6, 2, 2)
    """
    if not isinstance(data, Tensor) or data.dim() < 1:
        raise TypeError(f"data must be a tensor with at least one dimension, got "
                        f"{type(data).__name__}")
    if (not fractions or any(not isinstance(f, int | float) or f <= 0 for f in fractions)
            or abs(sum(fractions) - 1) > 1e-9):
        raise ValueError(f"fractions must be positive numbers summing to 1, got {fractions!r}")
    n = data.shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    bounds = [0, *(round(n * c) for c in np.cumsum(fractions)[:-1]), n]
    return tuple(data[order[a:b]] for a, b in zip(bounds[:-1], bounds[1:], strict=True))


# ------------------------------------------------------------------------------ preprocess
class LogitPreprocessor:
    """Dequantize integer values and map them to the real line, keeping the log-Jacobian.

    A value ``v`` in ``{0, ..., levels - 1}`` becomes ``s = v + u`` with ``u ~ U[0, 1)``, then
    ``x = s / levels`` in ``[0, 1)``, then ``y = logit(alpha + (1 - 2 alpha) x)``. A flow fits
    ``y``; the density of the dequantized ``s`` is ``log p(s) = log q(y) + log|dy/ds|``, and
    ``-log p(s)`` bounds ``-log P(v)`` from above in expectation over ``u``. Bits per dimension
    are ``-log p(s) / (D ln 2)`` with ``D`` the number of values per example. Works on any
    trailing shape: ``event_dim`` trailing dimensions form one example (1 for vectors, 3 for
    ``(C, H, W)`` images).

    Args:
        levels: number of integer levels (17 for the digits, 256 for 8-bit images).
        alpha: squeezes ``x`` into ``[alpha, 1 - alpha]`` so the logit stays finite.
        event_dim: trailing dimensions per example.

    Example:
        >>> pre = LogitPreprocessor(levels=17)
        >>> values = torch.randint(0, 17, (5, 64))
        >>> y, ladj = pre(values, generator=torch.Generator().manual_seed(0))
        >>> y.shape, ladj.shape
        (torch.Size([5, 64]), torch.Size([5]))
        >>> bool((pre.decode(y) == values).all())
        True

    References:
        Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP", ICLR
        (the logit preprocessing, section 4.1).
        Theis, van den Oord & Bethge (2016), "A note on the evaluation of generative
        models", ICLR (dequantization).
    """

    def __init__(self, levels: int, alpha: float = 0.05, event_dim: int = 1) -> None:
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha < 0.5:
            raise ValueError(f"alpha must be a number in [0, 0.5), got {alpha!r}")
        if isinstance(event_dim, bool) or not isinstance(event_dim, int) or event_dim < 0:
            raise ValueError(f"event_dim must be a non-negative integer, got {event_dim!r}")
        self.levels, self.alpha, self.event_dim = levels, float(alpha), event_dim
        # s -> y as torch transforms: an affine map onto [alpha, 1 - alpha], then the logit.
        self.transform = ComposeTransform([
            AffineTransform(self.alpha, (1 - 2 * self.alpha) / levels, event_dim=event_dim),
            SigmoidTransform().inv,
        ])

    def __repr__(self) -> str:
        return (f"LogitPreprocessor(levels={self.levels}, alpha={self.alpha}, "
                f"event_dim={self.event_dim})")

    def _check_values(self, values: Any) -> Tensor:
        v = torch.as_tensor(values)
        if v.dim() < self.event_dim:
            raise ValueError(f"values must have at least event_dim={self.event_dim} "
                             f"dimensions, got shape {tuple(v.shape)}")
        if v.is_floating_point() and not torch.equal(v, v.round()):
            raise ValueError("values must be integers in [0, levels); got non-integer floats "
                             "(pass the raw quantized values, not already scaled ones)")
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= self.levels):
            raise ValueError(f"values must lie in [0, {self.levels - 1}], got range "
                             f"[{int(v.min())}, {int(v.max())}]")
        return v

    def dequantize(self, values: Any, generator: torch.Generator | None = None,
                   dtype: torch.dtype | None = None) -> Tensor:
        """``s = v + u`` with ``u ~ U[0, 1)``, in ``dtype`` (default: torch's default)."""
        v = self._check_values(values)
        dtype = dtype or torch.get_default_dtype()
        noise = torch.rand(v.shape, generator=generator, dtype=dtype, device=v.device)
        return v.to(dtype) + noise

    def __call__(self, values: Any, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """Dequantize and transform: ``(y, log|dy/ds|)``, the latter summed per example."""
        s = self.dequantize(values, generator, dtype)
        y = self.transform(s)
        return y, self.transform.log_abs_det_jacobian(s, y)

    def decode(self, y: Tensor) -> Tensor:
        """Back to integer values in ``[0, levels)`` (for samples of a fitted flow)."""
        s = self.transform.inv(y)
        return s.floor().clamp(0, self.levels - 1).to(torch.int64)

    def bits_per_dim(self, log_prob_y: Tensor, ladj: Tensor, num_dims: int) -> Tensor:
        """Per-example bits per dimension of the dequantized values.

        Args:
            log_prob_y: the flow's ``log q(y)`` per example.
            ladj: the ``log|dy/ds|`` returned by ``__call__`` for the same examples.
            num_dims: values per example (64 for the digits, 784 for MNIST).
        """
        if log_prob_y.shape != ladj.shape:
            raise ValueError(f"log_prob_y and ladj must have the same shape, got "
                             f"{tuple(log_prob_y.shape)} and {tuple(ladj.shape)}")
        if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1:
            raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")
        return -(log_prob_y + ladj) / (num_dims * math.log(2))
