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

import os
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from flowinfer.checks import check_bool, check_callable, check_choice, check_int, check_number
from flowinfer.train.losses import Loss
from flowinfer.train.minibatch import run_minibatch
from flowinfer.train.optim import SCHEDULES, make_optimizer
from flowinfer.train.run import Callback, Run
from flowinfer.train.sampled import run_sampled
from flowinfer.train.state import FitResult
from flowinfer.train.strategy import Batch

__all__ = ["fit"]

_ON_NON_FINITE = ("stop", "recover")


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
    run = Run(loss, loss_obj, modules, params, optimizer, schedule, clip_grad, patience,
               restore_best, progress_bar, callback, desc)
    context = loss_obj.context() if loss_obj is not None else None
    if context is not None:
        context.__enter__()
    try:
        if data is None:
            if checkpoint is not None or resume is not None or distributed:
                raise ValueError("checkpoint=, resume= and distributed=True need data= "
                                 "(mini-batch training)")
            return run_sampled(run, steps, eval_every, on_non_finite, seed)
        return run_minibatch(run, data, val_data, val_fraction, epochs, batch_size, seed,
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
