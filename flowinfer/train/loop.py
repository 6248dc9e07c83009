"""The one training loop: mini-batches over data, or sampled batches, for any loss object.

Two modes share everything but where a batch comes from:

* **mini-batch** (``data=`` given): epochs over the shuffled rows of a tuple of tensors, a
  validation loss after each epoch (held-out rows or ``val_data``), early stopping on it,
  checkpoints and resume, one process or data-parallel over ``torch.distributed``;
* **sampled** (``data=None``): ``steps`` steps of a loss that draws its own samples (reverse
  KL, an ELBO); the monitored loss is a bias-corrected moving average of the per-step value,
  and early stopping counts windows of ``eval_every`` steps without a new best.

Both clip gradients, follow a learning-rate schedule, show a progress bar, call a callback,
and keep the parameters with the best monitored loss. A NaN or infinite loss (or gradient)
either stops the run, restoring the best parameters, or, with ``on_non_finite="recover"``,
restores them, halves the learning rate and carries on.

References:
    Loshchilov & Hutter (2017), "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR
    (the cosine schedule).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowinfer.checks import check_bool, check_callable, check_choice, check_int, check_number
from flowinfer.train.checkpoint import (
    check_checkpoint_paths,
    read_training_state,
    restore_training_state,
    save_training_state,
)
from flowinfer.train.losses import Loss
from flowinfer.train.optim import SCHEDULES, make_optimizer, make_scheduler, progress
from flowinfer.train.state import BestState, FitResult, non_finite_message, warn_non_finite
from flowinfer.train.strategy import Batch, training_strategy

__all__ = ["fit"]

_ON_NON_FINITE = ("stop", "recover")
_MAX_RECOVERIES = 5
# Weight of the newest step in the moving average of sampled training (about 50 steps).
_SMOOTHING = 0.02
Callback = Callable[[int, dict[str, Any]], Any]


def fit(
    loss: Loss | Callable[[Any], Tensor],
    modules: nn.Module | Sequence[nn.Module] | None = None,
    *,
    data: Batch | None = None,
    val_data: Batch | None = None,
    val_fraction: float = 0.1,
    epochs: int = 200,
    steps: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str | None = "cosine",
    clip_grad: float | None = 5.0,
    patience: int | None = 20,
    eval_every: int = 100,
    on_non_finite: str = "stop",
    restore_best: bool = True,
    progress_bar: bool | None = None,
    seed: int | None = None,
    callback: Callback | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    distributed: bool = False,
    desc: str = "fit",
) -> FitResult:
    """Minimise ``loss`` over the trainable parameters of ``modules`` with Adam.

    Args:
        loss: a :class:`~flowinfer.train.losses.Loss` or any callable ``batch -> scalar``.
        modules: the module(s) trained; their parameters are optimised and their state is
            what "best parameters" means. Default: ``loss.modules``.
        data: a tuple of tensors with one row per example (mini-batch mode), or None
            (sampled mode: ``loss(None)`` draws its own samples).
        val_data: validation rows (a tuple like ``data``); otherwise ``val_fraction`` of
            ``data`` is held out (seeded). Mini-batch mode only.
        val_fraction: share held out when ``val_data`` is None; 0 for none.
        epochs: passes over the training rows (mini-batch mode).
        steps: optimiser steps (sampled mode).
        batch_size: rows per step (global batch when distributed).
        lr: Adam learning rate (the peak, with the cosine schedule).
        weight_decay: decoupled weight decay (AdamW) when positive.
        schedule: ``"cosine"`` (to zero over all steps), ``"plateau"`` (halved when the
            monitored loss stalls for ``max(2, patience // 4)`` epochs/windows) or None.
        clip_grad: largest gradient norm (None: no clipping).
        patience: epochs (mini-batch) or windows of ``eval_every`` steps (sampled) without a
            new best before stopping; None never stops early.
        eval_every: the window length of sampled mode.
        on_non_finite: ``"stop"`` or ``"recover"`` (sampled mode: restore the best
            parameters, halve the learning rate, continue; at most 5 times).
        restore_best: end with the best parameters (else: the last ones, unless a
            non-finite loss forced a restore).
        progress_bar: show a progress bar (None: only when stderr is a terminal).
        seed: mini-batch mode: seeds the validation split and the shuffling (None: drawn
            from torch's global RNG); sampled mode: ``torch.manual_seed(seed)`` first.
        callback: ``callback(epoch_or_step, info)`` after each epoch (mini-batch) or step
            (sampled); returning True stops the run.
        checkpoint: file rewritten atomically after every epoch with the training state
            (mini-batch mode, one module built by ``build_flow``).
        resume: such a checkpoint of an interrupted run with the same data and options.
        distributed: data-parallel over every rank of a ``torch.distributed`` process group.
        desc: the progress bar's label.

    Returns:
        :class:`~flowinfer.train.state.FitResult`. Mini-batch mode records
        ``history["train_loss"]``, ``["val_loss"]`` (if validating) and ``["lr"]`` per epoch;
        sampled mode ``history["loss"]``, the loss's metrics and ``["smoothed_loss"]`` per
        step. The modules are left in eval mode.

    Example:
        >>> import torch, flowinfer as fi
        >>> from flowinfer.train.losses import MaximumLikelihood
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> flow = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(16,))
        >>> data = (torch.randn(500, 2) * 2.0 + 1.0,)
        >>> result = fit(MaximumLikelihood(flow), data=data, epochs=20, lr=1e-2, seed=0,
        ...              progress_bar=False)
        >>> result.history["val_loss"][-1] < result.history["val_loss"][0]
        True
    """
    loss_obj = loss if isinstance(loss, Loss) else None
    check_callable(loss, "loss")
    modules = _check_modules(modules, loss)
    _check_options(data, epochs, steps, batch_size, schedule, clip_grad, val_fraction, patience,
                   eval_every, on_non_finite, restore_best, progress_bar, seed, callback)
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("modules have no trainable parameters")
    optimizer = make_optimizer(params, lr, weight_decay)
    run = _Run(loss, loss_obj, modules, params, optimizer, schedule, clip_grad, patience,
               restore_best, progress_bar, callback, desc)
    context = loss_obj.context() if loss_obj is not None else None
    if context is not None:
        context.__enter__()
    try:
        if data is None:
            if checkpoint is not None or resume is not None or distributed:
                raise ValueError("checkpoint=, resume= and distributed=True need data= "
                                 "(mini-batch training)")
            return run.sampled(steps, eval_every, on_non_finite, seed)
        return run.minibatch(data, val_data, val_fraction, epochs, batch_size, seed,
                             checkpoint, resume, distributed)
    finally:
        if context is not None:
            context.__exit__(None, None, None)


def _check_modules(modules: Any, loss: Any) -> list[nn.Module]:
    if modules is None:
        modules = getattr(loss, "modules", None)
        if not modules:
            raise ValueError("modules is required when the loss does not name its modules")
    found = [modules] if isinstance(modules, nn.Module) else modules
    if not isinstance(found, list | tuple) or not all(isinstance(m, nn.Module) for m in found):
        raise TypeError(f"modules must be an nn.Module or a list of them, got "
                        f"{type(modules).__name__}")
    return list(found)


def _check_options(data: Any, epochs: Any, steps: Any, batch_size: Any, schedule: Any,
                   clip_grad: Any, val_fraction: Any, patience: Any, eval_every: Any,
                   on_non_finite: Any, restore_best: Any, progress_bar: Any, seed: Any,
                   callback: Any) -> None:
    if data is None:
        check_int(steps, "steps")
        check_int(eval_every, "eval_every")
    else:
        if not isinstance(data, tuple) or not data or not all(
                isinstance(t, Tensor) for t in data):
            raise TypeError(f"data must be a tuple of tensors or None, got "
                            f"{type(data).__name__}")
        if len({t.shape[0] for t in data}) != 1:
            raise ValueError(f"data tensors must share their first dimension, got shapes "
                             f"{[tuple(t.shape) for t in data]}")
        check_int(epochs, "epochs")
        check_int(batch_size, "batch_size")
    check_choice(schedule, "schedule", SCHEDULES)
    check_number(clip_grad, "clip_grad", low=0.0, low_open=True, allow_none=True)
    check_number(val_fraction, "val_fraction", low=0.0, high=1.0, high_open=True)
    check_int(patience, "patience", allow_none=True)
    check_choice(on_non_finite, "on_non_finite", _ON_NON_FINITE)
    check_bool(restore_best, "restore_best")
    check_bool(progress_bar, "progress", allow_none=True)
    check_int(seed, "seed", lowest=0, allow_none=True)
    check_callable(callback, "callback", allow_none=True)


def _split(data: Batch, val_data: Batch | None, val_fraction: float,
           generator: torch.Generator) -> tuple[Batch, Batch | None]:
    if val_data is not None:
        return data, val_data
    if val_fraction == 0:
        return data, None
    n = data[0].shape[0]
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise ValueError(f"data has {n} rows: too few to hold out val_fraction={val_fraction} "
                         "and keep a training row; pass more data or val_fraction=0")
    order = torch.randperm(n, generator=generator, device=data[0].device)
    val_idx, train_idx = order[:n_val], order[n_val:]
    return tuple(t[train_idx] for t in data), tuple(t[val_idx] for t in data)


class _Run:
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

    # ------------------------------------------------------------------ mini-batch
    def minibatch(self, data: Batch, val_data: Batch | None, val_fraction: float, epochs: int,
                  batch_size: int, seed: int | None, checkpoint: Any, resume: Any,
                  distributed: bool) -> FitResult:
        check_checkpoint_paths(checkpoint, resume)
        strategy = training_strategy(self.loss, self.modules, distributed)
        saved = None if resume is None else read_training_state(resume, self.modules)
        if saved is not None and seed is not None and seed != saved["seed"]:
            raise ValueError(f"seed={seed} differs from the resumed run's seed {saved['seed']};"
                             " leave seed=None to use the saved one")
        first_row = data[0]
        seed = strategy.shared_seed(saved["seed"] if saved is not None else seed, first_row)
        generator = torch.Generator(device=first_row.device).manual_seed(seed)
        train, val = _split(data, val_data, val_fraction, generator)
        n_train = train[0].shape[0]
        local_batch = strategy.local_batch(batch_size)
        strategy.prepare(train, batch_size, seed)
        scheduler = make_scheduler(self.optimizer, self.schedule,
                                   epochs * strategy.steps_per_epoch(n_train, batch_size),
                                   max(2, (self.patience or 20) // 4))
        step_scheduler = scheduler if self.schedule == "cosine" else None
        history: dict[str, list[float]] = {"train_loss": [], "lr": []}
        if val is not None:
            history["val_loss"] = []
        self.result.history = history
        monitor = "val_loss" if val is not None else "train_loss"
        evaluate = self.loss_obj.evaluate if self.loss_obj is not None else self.loss
        since_best, first_epoch = 0, 0
        if saved is not None:
            first_epoch, since_best = restore_training_state(
                saved, self.modules, optimizer=self.optimizer, scheduler=scheduler,
                generator=generator, n_rows=n_train, history=history, best=self.best)
            if self.patience is not None and since_best >= self.patience:
                first_epoch = epochs  # the saved run had already stopped early
                self.result.stop_reason = "early_stopping"
                self.result.message = (f"the resumed run had stopped early after epoch "
                                       f"{saved['epoch']}: no better {monitor} for "
                                       f"{self.patience} epochs")
        start = time.perf_counter()
        bar = progress(range(first_epoch, epochs),
                       self.progress_bar if strategy.is_main else False,
                       total=max(0, epochs - first_epoch), desc=self.desc)
        try:
            for epoch in bar:
                self._train(True)
                lr_now = self.optimizer.param_groups[0]["lr"]
                order = strategy.epoch_order(n_train, generator, epoch)
                total = torch.zeros((), dtype=torch.float64, device=first_row.device)
                for begin in range(0, order.shape[0], local_batch):
                    idx = order[begin:begin + local_batch]
                    value = strategy.train_loss(tuple(t[idx] for t in train))
                    self._step(value)
                    self.optimizer.step()
                    if step_scheduler is not None:
                        step_scheduler.step()
                    total += value.detach().double() * idx.shape[0]
                train_loss = strategy.average(float(total), order.shape[0], first_row)
                history["train_loss"].append(train_loss)
                history["lr"].append(lr_now)
                if not math.isfinite(train_loss):
                    self._stop_non_finite(train_loss, "training loss", epoch)
                    break
                val_loss = math.nan
                if val is not None:
                    self._train(False)
                    val_loss = strategy.evaluate(evaluate, val)
                    history["val_loss"].append(val_loss)
                    if not math.isfinite(val_loss):
                        self._stop_non_finite(val_loss, "validation loss", epoch)
                        break
                watched = history[monitor][-1]
                since_best = 0 if self.best.update(watched, epoch) else since_best + 1
                if self.schedule == "plateau":
                    scheduler.step(watched)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
                if checkpoint is not None and strategy.is_main:
                    save_training_state(
                        checkpoint, self.modules, optimizer=self.optimizer,
                        scheduler=scheduler, generator=generator, epoch=epoch, seed=seed,
                        n_rows=n_train, history=history, best=self.best,
                        since_best=since_best)
                info = {"train_loss": train_loss, "val_loss": val_loss, "lr": lr_now,
                        "modules": self.modules}
                if strategy.any(self.callback is not None and self.callback(epoch, info),
                                first_row):
                    self.result.stop_reason = "early_stopping"
                    self.result.message = f"stopped by the callback after epoch {epoch}"
                    break
                if self.patience is not None and since_best >= self.patience:
                    self.result.stop_reason = "early_stopping"
                    self.result.message = (f"stopped early after epoch {epoch}: no better "
                                           f"{monitor} for {self.patience} epochs")
                    break
        finally:
            self._train(False)
            strategy.close()
            if hasattr(bar, "close"):
                bar.close()
        if not self.result.message:
            self.result.message = f"completed {epochs} epochs"
        return self._finish(start, f"best {monitor} {self.best.loss:.4f} at epoch "
                                   f"{self.best.step} (its parameters are restored)")

    # ------------------------------------------------------------------ sampled
    def sampled(self, steps: int, eval_every: int, on_non_finite: str,
                seed: int | None) -> FitResult:
        if seed is not None:
            torch.manual_seed(seed)
        loss_obj = self.loss_obj
        monitor = loss_obj.monitor if loss_obj is not None else "loss"
        scheduler = make_scheduler(self.optimizer, self.schedule, steps,
                                   max(2, (self.patience or 20) // 4))
        history: dict[str, list[float]] = {"loss": []}
        self.result.history = history
        smoothed = weight_sum = 0.0
        was_settled, best_at_window, since_best, recoveries = False, None, 0, 0
        window: list[float] = []
        start = time.perf_counter()
        self._train(True)
        bar = progress(range(steps), self.progress_bar, total=steps, desc=self.desc)
        try:
            for step in bar:
                if loss_obj is not None:
                    loss_obj.begin_step(step)
                settled = loss_obj.settled if loss_obj is not None else True
                if settled and not was_settled and step > 0:
                    smoothed = weight_sum = 0.0  # the running loss counts settled steps only
                was_settled = settled
                value = self.loss(None)
                loss_value = float(value.detach())
                metrics = loss_obj.metrics() if loss_obj is not None else {}
                watched = metrics.get(monitor, loss_value)
                # Bias-corrected moving average (the first values are not pulled to zero).
                if math.isfinite(watched):
                    smoothed = (1 - _SMOOTHING) * smoothed + _SMOOTHING * watched
                    weight_sum = (1 - _SMOOTHING) * weight_sum + _SMOOTHING
                running = smoothed / weight_sum if weight_sum else math.nan
                history["loss"].append(loss_value)
                for key, v in metrics.items():
                    history.setdefault(key, []).append(v)
                history.setdefault("smoothed_loss", []).append(running)
                bad = None
                if not math.isfinite(loss_value):
                    bad = (loss_value, "loss")
                else:
                    grad_norm = self._step(value)
                    if not math.isfinite(grad_norm):
                        bad = (grad_norm, "gradient norm")
                if bad is not None:
                    if on_non_finite == "recover" and recoveries < _MAX_RECOVERIES:
                        recoveries += 1
                        self.best.restore()
                        for group in self.optimizer.param_groups:
                            group["lr"] *= 0.5
                        self.optimizer.state.clear()
                        history.setdefault("recovered_at", []).append(float(step))
                        continue
                    self._stop_non_finite(bad[0], bad[1], step)
                    break
                self.optimizer.step()
                if self.schedule == "cosine":
                    scheduler.step()
                if settled:
                    self.best.update(running, step)
                if step % 50 == 0 and hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{running if settled else loss_value:.4f}")
                info = {"loss": loss_value, **metrics, "smoothed_loss": running,
                        "lr": self.optimizer.param_groups[0]["lr"], "modules": self.modules}
                if self.callback is not None and self.callback(step, info):
                    self.result.stop_reason = "early_stopping"
                    self.result.message = f"stopped by the callback at step {step}"
                    self.result.best_epoch, self.result.best_loss = step, running
                    break
                window.append(running)
                if len(window) == eval_every:
                    if self.schedule == "plateau":
                        scheduler.step(sum(window) / len(window))
                    window.clear()
                    since_best = 0 if self.best.step != best_at_window else since_best + 1
                    best_at_window = self.best.step
                    if self.patience is not None and since_best >= self.patience:
                        self.result.stop_reason = "early_stopping"
                        self.result.message = (
                            f"stopped early at step {step}: the smoothed {monitor} has not "
                            f"improved for {self.patience} windows of {eval_every} steps")
                        self.result.best_epoch, self.result.best_loss = step, running
                        break
            else:
                self.result.best_epoch, self.result.best_loss = steps - 1, running
        finally:
            self._train(False)
            if hasattr(bar, "close"):
                bar.close()
        if recoveries:
            self.result.message = (f"{self.result.message}; " if self.result.message else "") + (
                f"recovered from {recoveries} non-finite step(s) by restoring the best "
                "parameters and halving the learning rate")
        return self._finish(start, f"best smoothed {monitor} {self.best.loss:.4f} at step "
                                   f"{self.best.step} (its parameters are restored)")
