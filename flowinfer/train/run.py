"""The state one training run shares between its two modes, and what both do the same way."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from flowinfer.train.losses import Loss
from flowinfer.train.state import BestState, FitResult, non_finite_message, warn_non_finite

__all__ = ["Run", "Callback"]

Callback = Callable[[int, dict[str, Any]], Any]


class Run:
    """The state one call of :func:`fit` shares between its two modes."""

    def __init__(self, loss: Any, loss_obj: Loss | None, modules: list[nn.Module],
                 params: list[Tensor], optimizer: torch.optim.Optimizer, schedule: str | None,
                 clip_grad: float | None, patience: int | None, restore_best: bool,
                 progress_bar: bool | None, callback: Callback | None, desc: str) -> None:
        self.loss, self.loss_obj, self.modules, self.params = loss, loss_obj, modules, params
        self.optimizer, self.schedule, self.patience = optimizer, schedule, patience
        self.max_norm = math.inf if clip_grad is None else float(clip_grad)
        self.restore_best, self.progress_bar, self.callback = restore_best, progress_bar, callback
        self.desc = desc
        self.best = BestState(modules)
        self.result = FitResult()

    def _train(self, mode: bool) -> None:
        for m in self.modules:
            m.train(mode)

    def _step(self, value: Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        value.backward()
        return float(torch.nn.utils.clip_grad_norm_(self.params, self.max_norm))

    def _stop_non_finite(self, value: float, what: str, step: int) -> None:
        self.best.restore()
        self.result.stop_reason = "non_finite_loss"
        self.result.message = non_finite_message(value, what, step, self.best)
        warn_non_finite(self.result.message)

    def _finish(self, start: float, summary: str) -> FitResult:
        result = self.result
        if result.stop_reason != "non_finite_loss" and self.restore_best:
            self.best.restore()
            result.message = f"{result.message}; {summary}" if result.message else summary
        if result.best_epoch is None or self.restore_best or (
                result.stop_reason == "non_finite_loss"):
            result.best_epoch, result.best_loss = self.best.step, self.best.loss
        result.wall_time = time.perf_counter() - start
        return result
