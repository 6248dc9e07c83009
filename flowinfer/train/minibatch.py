"""Mini-batch training: epochs over shuffled rows, validation, early stopping, checkpoints."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from flowinfer.train.checkpoint import (
    check_checkpoint_paths,
    read_training_state,
    restore_training_state,
    save_training_state,
)
from flowinfer.train.optim import make_scheduler, progress
from flowinfer.train.run import Run
from flowinfer.train.state import FitResult
from flowinfer.train.strategy import Batch, training_strategy

__all__ = ["run_minibatch"]


def _split(data: Batch, val_data: Batch | None, val_fraction: float,
           generator: torch.Generator) -> tuple[Batch, Batch | None]:
    if val_data is not None:
        return data, val_data
    if val_fraction == 0:
        return data, None
    train_idx, val_idx = split_rows(data[0].shape[0], val_fraction, generator)
    return tuple(t[train_idx] for t in data), tuple(t[val_idx] for t in data)


def split_rows(n: int, val_fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(training, validation) row indices of ``n`` rows, as ``fit`` splits them.

    ``fit(..., seed=s)`` uses ``torch.Generator(device).manual_seed(s)`` (one process), so
    ``split_rows(n, val_fraction, torch.Generator().manual_seed(s))`` names its validation
    rows (NPE's ``combine="mixture"`` fits its weights on them).
    """
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise ValueError(f"data has {n} rows: too few to hold out val_fraction={val_fraction} "
                         "and keep a training row; pass more data or val_fraction=0")
    order = torch.randperm(n, generator=generator, device=generator.device)
    return order[n_val:], order[:n_val]


def run_minibatch(run: Run, data: Batch, val_data: Batch | None, val_fraction: float, epochs: int,
              batch_size: int, seed: int | None, checkpoint: Any, resume: Any,
              distributed: bool) -> FitResult:
    check_checkpoint_paths(checkpoint, resume)
    strategy = training_strategy(run.loss, run.modules, distributed)
    saved = None if resume is None else read_training_state(resume, run.modules)
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
    scheduler = make_scheduler(run.optimizer, run.schedule,
                               epochs * strategy.steps_per_epoch(n_train, batch_size),
                               max(2, (run.patience or 20) // 4))
    step_scheduler = scheduler if run.schedule == "cosine" else None
    history: dict[str, list[float]] = {"train_loss": [], "lr": []}
    if val is not None:
        history["val_loss"] = []
    run.result.history = history
    monitor = "val_loss" if val is not None else "train_loss"
    evaluate = run.loss_obj.evaluate if run.loss_obj is not None else run.loss
    since_best, first_epoch = 0, 0
    if saved is not None:
        first_epoch, since_best = restore_training_state(
            saved, run.modules, optimizer=run.optimizer, scheduler=scheduler,
            generator=generator, n_rows=n_train, history=history, best=run.best)
        if run.patience is not None and since_best >= run.patience:
            first_epoch = epochs  # the saved run had already stopped early
            run.result.stop_reason = "early_stopping"
            run.result.message = (f"the resumed run had stopped early after epoch "
                                   f"{saved['epoch']}: no better {monitor} for "
                                   f"{run.patience} epochs")
    start = time.perf_counter()
    bar = progress(range(first_epoch, epochs),
                   run.progress_bar if strategy.is_main else False,
                   total=max(0, epochs - first_epoch), desc=run.desc)
    try:
        for epoch in bar:
            run._train(True)
            lr_now = run.optimizer.param_groups[0]["lr"]
            order = strategy.epoch_order(n_train, generator, epoch)
            total = torch.zeros((), dtype=torch.float64, device=first_row.device)
            for begin in range(0, order.shape[0], local_batch):
                idx = order[begin:begin + local_batch]
                value = strategy.train_loss(tuple(t[idx] for t in train))
                run._step(value)
                run.optimizer.step()
                if step_scheduler is not None:
                    step_scheduler.step()
                total += value.detach().double() * idx.shape[0]
            train_loss = strategy.average(float(total), order.shape[0], first_row)
            history["train_loss"].append(train_loss)
            history["lr"].append(lr_now)
            if not math.isfinite(train_loss):
                run._stop_non_finite(train_loss, "training loss", epoch)
                break
            val_loss = math.nan
            if val is not None:
                run._train(False)
                val_loss = strategy.evaluate(evaluate, val)
                history["val_loss"].append(val_loss)
                if not math.isfinite(val_loss):
                    run._stop_non_finite(val_loss, "validation loss", epoch)
                    break
            watched = history[monitor][-1]
            since_best = 0 if run.best.update(watched, epoch) else since_best + 1
            if run.schedule == "plateau":
                scheduler.step(watched)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
            if checkpoint is not None and strategy.is_main:
                save_training_state(
                    checkpoint, run.modules, optimizer=run.optimizer,
                    scheduler=scheduler, generator=generator, epoch=epoch, seed=seed,
                    n_rows=n_train, history=history, best=run.best,
                    since_best=since_best)
            info = {"train_loss": train_loss, "val_loss": val_loss, "lr": lr_now,
                    "modules": run.modules}
            if strategy.any(run.callback is not None and run.callback(epoch, info),
                            first_row):
                run.result.stop_reason = "early_stopping"
                run.result.message = f"stopped by the callback after epoch {epoch}"
                break
            if run.patience is not None and since_best >= run.patience:
                run.result.stop_reason = "early_stopping"
                run.result.message = (f"stopped early after epoch {epoch}: no better "
                                       f"{monitor} for {run.patience} epochs")
                break
    finally:
        run._train(False)
        strategy.close()
        if hasattr(bar, "close"):
            bar.close()
    if not run.result.message:
        run.result.message = f"completed {epochs} epochs"
    return run._finish(start, f"best {monitor} {run.best.loss:.4f} at epoch "
                               f"{run.best.step} (its parameters are restored)")
