"""Z-scoring of simulated parameters and data, with a clear error for constant columns.

Example:
    >>> import torch
    >>> z = Standardizer.fit(torch.tensor([[0.0, 1.0], [2.0, 3.0]]), name="data")
    >>> z(torch.tensor([[1.0, 2.0]]))
    tensor([[0., 0.]])
    >>> Standardizer.fit(torch.tensor([[0.0, 1.0], [2.0, 1.0]]), name="data")
    Traceback (most recent call last):
        ...
    ValueError: data column(s) [1] are constant over all 2 simulations (value 1.0), ...

References:
    Lueckmann et al. (2021), "Benchmarking Simulation-Based Inference", AISTATS (z-scoring
    of parameters and data as part of every neural estimator).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Standardizer"]

_CHOICES = ("error", "keep")


class Standardizer(nn.Module):
    """``(x - mean) / std`` with statistics over the draws (and optionally pooled axes).

    Args:
        mean: the mean, shaped like one draw (or broadcastable to it).
        std: the standard deviation, same shape.
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @classmethod
    def fit(cls, x: Tensor, name: str = "data", pool: Sequence[int] = (),
            constant: str = "error", labels: Sequence[str] | None = None) -> Standardizer:
        """Statistics of ``x`` (draws along dim 0).

        Args:
            x: ``(N, *shape)`` draws.
            name: what ``x`` is, for the message.
            pool: axes of one draw (0 = first axis after the draws) whose entries share one
                mean and std, e.g. the trial axis of i.i.d. trials or the time axis.
            constant: ``"error"`` raises for a column with zero spread; ``"keep"`` leaves
                such columns centred but unscaled.
            labels: optional names of the flattened columns, for the message.

        Raises:
            ValueError: a column is constant (``constant="error"``), or fewer than 2 draws.
        """
        if constant not in _CHOICES:
            raise ValueError(f"constant_data must be one of {_CHOICES}, got {constant!r}")
        if x.shape[0] < 2:
            raise ValueError(f"{name}: need at least 2 simulations to standardise, got "
                             f"{x.shape[0]}")
        x = x.to(torch.get_default_dtype()) if not x.is_floating_point() else x
        dims = (0, *(1 + int(p) for p in pool))
        mean = x.mean(dim=dims, keepdim=True)[0]
        std = x.std(dim=dims, keepdim=True)[0]
        # A column whose spread is lost in rounding is as constant as an exact one.
        flat_std, flat_mean = std.reshape(-1), mean.reshape(-1)
        tiny = flat_std <= 1e-6 * flat_mean.abs().clamp_min(1e-12)
        if tiny.any():
            if constant == "error":
                cols = tiny.nonzero().flatten().tolist()
                shown = [labels[c] for c in cols] if labels is not None else cols
                value = float(flat_mean[cols[0]])
                raise ValueError(
                    f"{name} column(s) {shown[:10]} are constant over all {x.shape[0]} "
                    f"simulations (value {value}), so they cannot be standardised; they "
                    "carry no information about the parameters: drop them from the model's "
                    'observed site, or pass constant_data="keep" to leave them unscaled'
                )
            flat_std = torch.where(tiny, torch.ones_like(flat_std), flat_std)
            std = flat_std.reshape(std.shape)
        return cls(mean, std)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def inverse(self, z: Tensor) -> Tensor:
        """Undo the standardisation."""
        return z * self.std + self.mean

    def log_abs_det(self) -> Tensor:
        """``log|d z / d x|`` of one draw, summed over its entries (a constant)."""
        return -torch.log(self.std).sum()
