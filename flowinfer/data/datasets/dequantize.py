"""Dequantization of integer data (pixel intensities) and the logit map to the real line.

Discrete data have no density; :class:`LogitPreprocessor` adds uniform dequantization noise,
maps the values to the real line with a logit, and keeps the log-Jacobian of that map so that
bits per dimension are reported for the original values.

Example:
    >>> pre = LogitPreprocessor(levels=256, event_dim=3)
    >>> y, ladj = pre(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))
    >>> y.shape, ladj.shape
    (torch.Size([2, 1, 4, 4]), torch.Size([2]))

References:
    Theis, van den Oord & Bethge (2016), "A note on the evaluation of generative models",
    ICLR (dequantization and bits per dimension).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.distributions.transforms import AffineTransform, ComposeTransform, SigmoidTransform

from flowinfer.checks import check_int, check_number

__all__ = ["LogitPreprocessor"]


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

    Raises:
        TypeError: ``levels`` or ``event_dim`` is not an integer, ``alpha`` not a number.
        ValueError: ``levels < 2``, ``alpha`` outside ``[0, 0.5)`` or ``event_dim < 0``.

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
        self.levels = check_int(levels, "levels", 2)
        self.alpha = check_number(alpha, "alpha", low=0.0, high=0.5, high_open=True)
        self.event_dim = check_int(event_dim, "event_dim", 0)
        # s -> y as torch transforms: an affine map onto [alpha, 1 - alpha], then the logit.
        self.transform = ComposeTransform([
            AffineTransform(self.alpha, (1 - 2 * self.alpha) / self.levels,
                            event_dim=self.event_dim),
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

        Raises:
            TypeError: ``log_prob_y`` or ``ladj`` is not a tensor, ``num_dims`` not an integer.
            ValueError: their shapes differ, or ``num_dims < 1``.
        """
        for name, value in (("log_prob_y", log_prob_y), ("ladj", ladj)):
            if not isinstance(value, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
        if log_prob_y.shape != ladj.shape:
            raise ValueError(f"log_prob_y and ladj must have the same shape, got "
                             f"{tuple(log_prob_y.shape)} and {tuple(ladj.shape)}")
        num_dims = check_int(num_dims, "num_dims")
        return -(log_prob_y + ladj) / (num_dims * math.log(2))
