"""What a training run records: the result, the best parameters so far, the non-finite stop."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["FitResult", "BestState", "NonFiniteLossWarning"]


class NonFiniteLossWarning(RuntimeWarning):
    """Training met a NaN or infinite loss and stopped (best parameters were restored)."""


@dataclass
class FitResult:
    """What a training run did.

    Attributes:
        history: per-epoch (mini-batch training) or per-step (sampled training) curves, e.g.
            ``"train_loss"``, ``"val_loss"`` or ``"loss"``; each a list of floats.
        best_epoch: epoch/step whose parameters the model holds at the end (None if none).
        best_loss: the loss at ``best_epoch`` (validation loss when there is a validation set).
        wall_time: seconds spent in the loop.
        stop_reason: ``"completed"``, ``"early_stopping"`` or ``"non_finite_loss"``.
        message: a human-readable account of how the run ended.

    Example:
        >>> FitResult(history={"loss": [1.0, 0.5]}, best_epoch=1, best_loss=0.5).stopped_early
        False
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
    """Keeps a copy of modules' parameters at their lowest loss so far, and restores it.

    Args:
        modules: one module or several; their ``state_dict`` is what is kept.

    Example:
        >>> import torch
        >>> layer = torch.nn.Linear(1, 1)
        >>> best = BestState(layer)
        >>> best.update(0.5, step=0)
        True
        >>> with torch.no_grad():
        ...     _ = layer.weight.fill_(3.0)
        >>> best.restore(); float(layer.weight.detach()) != 3.0
        True
    """

    def __init__(self, modules: nn.Module | Sequence[nn.Module]) -> None:
        self.modules = [modules] if isinstance(modules, nn.Module) else list(modules)
        self.loss = math.inf
        self.step: int | None = None
        self._saved = self._copy()

    def _copy(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(m.state_dict()) for m in self.modules]

    def update(self, loss: float, step: int) -> bool:
        """Record the current parameters if ``loss`` is finite and lower; True if recorded."""
        if math.isfinite(loss) and loss < self.loss:
            self.loss = loss
            self.step = step
            self._saved = self._copy()
            return True
        return False

    def restore(self) -> None:
        """Load the recorded parameters back into the modules."""
        for module, state in zip(self.modules, self._saved, strict=True):
            module.load_state_dict(state)

    def state_dict(self) -> dict[str, Any]:
        """The best loss, its step and the recorded parameters (for checkpoints)."""
        states = [{k: v.detach() for k, v in s.items()} for s in self._saved]
        return {"best_loss": float(self.loss), "best_step": self.step,
                "best_state": states[0] if len(states) == 1 else states}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take what :meth:`state_dict` returned (also the format of flowinfer 0.1 files)."""
        saved = state["best_state"]
        saved = [saved] if isinstance(saved, dict) else list(saved)
        self.loss, self.step = state["best_loss"], state["best_step"]
        self._saved = [{k: v.clone() for k, v in s.items()} for s in saved]


def non_finite_message(value: float, what: str, step: int, best: BestState,
                       action: str = "stopped") -> str:
    """Say what went non-finite where, and which parameters the modules now hold."""
    kept = (f"restored the parameters of step/epoch {best.step} ({what} {best.loss:.4f})"
            if best.step is not None else "restored the initial parameters")
    return (f"training {action}: the {what} became {value} at step/epoch {step}; {kept}. Try a "
            "lower learning rate, gradient clipping (clip_grad=...), or standardising the data.")


def warn_non_finite(message: str) -> None:
    warnings.warn(message, NonFiniteLossWarning, stacklevel=4)
