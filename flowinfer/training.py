"""Pieces shared by the training loops: the result record, best-state keeping, progress bars."""

from __future__ import annotations

import copy
import math
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["FitResult", "BestState", "NonFiniteLossWarning", "progress", "make_optimizer"]


def check_int(value: object, name: str, lowest: int = 1, allow_none: bool = False) -> int | None:
    """Return ``value`` if it is an int ``>= lowest`` (or None when allowed), else ValueError."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be an integer >= {lowest}{extra}, got {value!r}")
    return value


class NonFiniteLossWarning(RuntimeWarning):
    """Training met a NaN or infinite loss and stopped (best parameters were restored)."""


@dataclass
class FitResult:
    """What a training run did.

    Attributes:
        history: per-epoch (density) or per-step (reverse KL) curves, e.g. ``"train_loss"``,
            ``"val_loss"`` or ``"loss"``; each a list of floats.
        best_epoch: epoch/step whose parameters the model holds at the end (None if none).
        best_loss: the loss at ``best_epoch`` (validation loss when there is a validation set).
        wall_time: seconds spent in the loop.
        stop_reason: ``"completed"``, ``"early_stopping"`` or ``"non_finite_loss"``.
        message: a human-readable account of how the run ended.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None
    best_loss: float = math.inf
    wall_time: float = 0.0
    stop_reason: str = "completed"
    message: str = ""

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason != "completed"

    def __repr__(self) -> str:
        curves = ", ".join(f"{k}[{len(v)}]" for k, v in self.history.items())
        return (
            f"FitResult(best_epoch={self.best_epoch}, best_loss={self.best_loss:.4f}, "
            f"wall_time={self.wall_time:.1f}s, stop_reason={self.stop_reason!r}, {curves})"
        )


class BestState:
    """Keeps a copy of a module's parameters at its lowest loss so far, and restores it."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.loss = math.inf
        self.step: int | None = None
        self._state = copy.deepcopy(module.state_dict())

    def update(self, loss: float, step: int) -> bool:
        """Record the current parameters if ``loss`` is finite and lower; True if recorded."""
        if math.isfinite(loss) and loss < self.loss:
            self.loss = loss
            self.step = step
            self._state = copy.deepcopy(self.module.state_dict())
            return True
        return False

    def restore(self) -> None:
        self.module.load_state_dict(self._state)


def stop_on_non_finite(loss: float, step: int, best: BestState, result: FitResult,
                       what: str = "loss") -> bool:
    """If ``loss`` is not finite: restore the best parameters, warn, fill ``result``; True."""
    if math.isfinite(loss):
        return False
    best.restore()
    result.stop_reason = "non_finite_loss"
    where = f"step/epoch {step}"
    kept = (
        f"restored the parameters of step/epoch {best.step} ({what} {best.loss:.4f})"
        if best.step is not None
        else "restored the initial parameters"
    )
    result.message = (
        f"training stopped: the {what} became {loss} at {where}; {kept}. Try a lower "
        "learning rate, gradient clipping (clip_grad=...), or standardising the data."
    )
    warnings.warn(result.message, NonFiniteLossWarning, stacklevel=3)
    return True


def progress(iterable: Iterable, enabled: bool | None, total: int | None = None,
             desc: str = ""):
    """A ``tqdm`` bar over ``iterable``; off when ``enabled`` is False or stderr is no TTY."""
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if enabled is None else enabled
    return tqdm(iterable, total=total, desc=desc, disable=not show, leave=False)


def make_optimizer(params: Iterable[torch.Tensor], lr: float,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam (AdamW when ``weight_decay > 0``) after checking the learning rate."""
    if not (isinstance(lr, int | float) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    if not (isinstance(weight_decay, int | float) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a non-negative number, got {weight_decay!r}")
    if weight_decay:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr)
