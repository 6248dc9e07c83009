"""Density estimation: fit a flow to data by maximum likelihood (forward KL).

Minimising the mean negative log-likelihood ``-1/n sum_i log q(x_i)`` of the data equals
minimising ``KL(p_data || q)`` up to the data's entropy, which does not depend on ``q``; so
on data with a known density the best possible test loss is that entropy, and the gap to it
measures the fit (``docs/density.md``).

References:
    Papamakarios et al. (2021), "Normalizing Flows for Probabilistic Modeling and
    Inference", JMLR 22(57).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import pyro
import torch
from torch import Tensor

from flowinfer.distributed import training_context
from flowinfer.flow import Flow
from flowinfer.io import (
    check_checkpoint_paths,
    read_training_state,
    restore_training_state,
    save_training_state,
)
from flowinfer.registry import get_flow_spec
from flowinfer.training import (
    BestState,
    FitResult,
    check_int,
    make_optimizer,
    stop_on_non_finite,
)
from flowinfer.training import progress as progress_bar

__all__ = ["fit_density", "mean_nll"]

_SCHEDULES = ("cosine", "plateau", None)
# Rows evaluated at once for the validation loss: bounds memory, no gradients kept.
_EVAL_BATCH = 8192

Callback = Callable[[int, dict[str, Any]], Any]


# ------------------------------------------------------------------------------ checks
def _as_rows(value: Any, name: str, width: int | tuple[int, ...], like: Tensor) -> Tensor:
    """``value`` as a finite ``(n, width)`` (or ``(n, *shape)``) tensor with ``like``'s dtype
    and device; ``width`` is a tuple for image flows (``event_shape == (C, H, W)``)."""
    event = tuple(width) if isinstance(width, tuple) else (width,)
    want = f"(n, {', '.join(str(v) for v in event)})"
    # Casting would silently drop an imaginary part or turn booleans into 0/1 values.
    source_dtype = str(getattr(value, "dtype", ""))
    if "complex" in source_dtype or "bool" in source_dtype:
        raise TypeError(f"{name} must hold real numbers, got dtype {source_dtype}")
    try:
        rows = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{name} must be a numeric array or tensor of shape {want}, got "
            f"{type(value).__name__} ({err})"
        ) from None
    if len(event) > 1:
        if rows.dim() == 2 and rows.shape[1] == math.prod(event):
            hint = f"; reshape flattened images with {name}.reshape{(-1, *event)}"
        else:
            hint = ""
        if tuple(rows.shape[1:]) != event or rows.dim() != 1 + len(event):
            raise ValueError(f"{name} must be of shape {want} (the flow's event shape), got "
                             f"shape {tuple(rows.shape)}{hint}")
    elif rows.dim() != 2:
        hint = f"; for 1-D data use {name}.reshape(-1, 1)" if rows.dim() == 1 else ""
        raise ValueError(
            f"{name} must be 2-D of shape {want}, got shape {tuple(rows.shape)}{hint}"
        )
    elif rows.shape[1] != event[0]:
        raise ValueError(
            f"{name} must have {event[0]} columns (the flow's "
            f"{'dim' if name.endswith('data') else 'context_dim'}), got shape "
            f"{tuple(rows.shape)}"
        )
    if rows.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    bad = int((~torch.isfinite(rows)).reshape(rows.shape[0], -1).any(dim=1).sum())
    if bad:
        raise ValueError(
            f"{name} must be finite: {bad} of {rows.shape[0]} rows contain NaN or inf; "
            "drop or impute those rows first"
        )
    return rows


def _split_pair(value: Any, context: Any, flow: Flow, name: str) -> tuple[Any, Any]:
    # A conditional flow may take its data as one (x, context) pair.
    if flow.is_conditional and context is None and isinstance(value, tuple) and len(value) == 2:
        return value
    return value, context


def _rows_and_context(
    value: Any, context: Any, flow: Flow, name: str, context_name: str
) -> tuple[Tensor, Tensor | None]:
    like = flow.base_loc
    value, context = _split_pair(value, context, flow, name)
    x = _as_rows(value, name, tuple(flow.event_shape), like)
    if not flow.is_conditional:
        if context is not None:
            raise ValueError(
                f"{context_name} was given but the flow is unconditional (context_dim=0); "
                "build it with context_dim=... to condition on it"
            )
        return x, None
    if context is None:
        raise ValueError(
            f"{context_name} is required: the flow is conditional (context_dim="
            f"{flow.context_dim}); pass {context_name}=... of shape (n, {flow.context_dim}) "
            f"or {name}=(x, context)"
        )
    c = _as_rows(context, context_name, flow.context_dim, like)
    if c.shape[0] != x.shape[0]:
        raise ValueError(
            f"{context_name} must have one row per row of {name}: got {c.shape[0]} rows "
            f"for {x.shape[0]}"
        )
    return x, c


def _check_options(
    flow: Any, epochs: Any, batch_size: Any, schedule: Any, clip_grad: Any,
    val_fraction: Any, patience: Any, progress: Any, seed: Any, callback: Any,
) -> None:
    if not isinstance(flow, Flow):
        raise ValueError(f"flow must be a flowinfer Flow (see build_flow), got "
                         f"{type(flow).__name__}")
    name = (flow.config or {}).get("name")
    if name is not None:
        try:
            spec = get_flow_spec(name)
        except ValueError:
            spec = None
        if spec is not None and not spec.has_inverse:
            raise ValueError(
                f"flow {name!r} has no analytic inverse, so the log density of data cannot be "
                "computed; fit_density needs a flow such as 'nsf', 'maf' or 'realnvp'"
            )
    check_int(epochs, "epochs")
    check_int(batch_size, "batch_size")
    if schedule not in _SCHEDULES:
        raise ValueError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}")
    if clip_grad is not None and not (
        isinstance(clip_grad, int | float) and not isinstance(clip_grad, bool)
        and 0 < clip_grad < math.inf
    ):
        raise ValueError(f"clip_grad must be a positive finite number or None, got {clip_grad!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float) or not (
        0 <= val_fraction < 1
    ):
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    check_int(patience, "patience", allow_none=True)
    if progress is not None and not isinstance(progress, bool):
        raise ValueError(f"progress must be True, False or None (auto), got {progress!r}")
    check_int(seed, "seed", lowest=0, allow_none=True)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable or None, got {type(callback).__name__}")


# ------------------------------------------------------------------------------ loss
@torch.no_grad()
def mean_nll(flow: Flow, x: Tensor, context: Tensor | None = None,
             batch_size: int = _EVAL_BATCH) -> float:
    """Mean negative log-likelihood of the rows of ``x`` under ``flow``, in nats per row.

    Evaluated in batches without gradients; the flow's train/eval mode is left as it is.

    Example:
        >>> import flowinfer as fi
        >>> flow = fi.build_flow("realnvp", dim=2, num_layers=1, hidden=(8,))  # N(0, I)
        >>> round(mean_nll(flow, torch.zeros(10, 2)), 4)  # log(2 pi)
        1.8379
    """
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], batch_size):
        c = None if context is None else context[start:start + batch_size]
        total += flow.log_prob(x[start:start + batch_size], c).double().sum()
    return -float(total) / x.shape[0]


# ------------------------------------------------------------------------------ fit
def fit_density(
    flow: Flow,
    data: Any,
    *,
    context: Any = None,
    epochs: int = 200,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str | None = "cosine",
    clip_grad: float | None = 5.0,
    val_fraction: float = 0.1,
    val_data: Any = None,
    patience: int | None = 20,
    progress: bool | None = None,
    seed: int | None = None,
    callback: Callback | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    distributed: bool = False,
) -> FitResult:
    """Fit ``flow`` to ``data`` by maximum likelihood with mini-batch Adam.

    Each epoch shuffles the training rows, takes Adam steps on the mean negative
    log-likelihood of each mini-batch (gradient norm clipped to ``clip_grad``), then measures
    the validation loss. Early stopping watches the validation loss (the epoch's training
    loss when there is no validation set): after ``patience`` epochs without improvement the
    run stops, and at the end the flow always holds the parameters of its best epoch. A NaN
    or infinite loss stops the run with a :class:`~flowinfer.training.NonFiniteLossWarning`
    and restores the best parameters. The flow is in train mode while fitting (so ActNorm
    layers initialise on the first batch) and in eval mode afterwards.

    Args:
        flow: a flow with an analytic inverse (``nsf``, ``maf``, ``realnvp``, ...).
        data: ``(n, flow.dim)`` numpy array, tensor or nested list (``(n, C, H, W)`` for an
            image flow such as ``build_flow("glow", shape=(C, H, W))``); converted to the flow's
            parameter dtype and device. For a conditional flow also ``(x, context)``.
        context: ``(n, flow.context_dim)`` context rows for a conditional flow.
        epochs: passes over the training rows.
        batch_size: rows per Adam step.
        lr: Adam learning rate.
        weight_decay: decoupled weight decay (AdamW) when positive.
        schedule: ``"cosine"`` (learning rate annealed to 0 over all steps), ``"plateau"``
            (halved when the monitored loss stalls for ``max(2, patience // 4)`` epochs) or
            None (constant).
        clip_grad: largest gradient norm (None: no clipping).
        val_fraction: share of ``data`` held out (seeded) for validation; 0 for none.
        val_data: a separate validation set (``(x, context)`` for a conditional flow);
            when given, all of ``data`` is used for training and ``val_fraction`` is ignored.
        patience: epochs without improvement before stopping (None: never stop early).
        progress: show a progress bar (None: only when stderr is a terminal).
        seed: seeds the validation split and the shuffling (None: drawn from torch's global
            RNG, so ``torch.manual_seed`` makes runs repeatable).
        callback: ``callback(epoch, info)`` after each epoch, ``info`` holding
            ``train_loss``, ``val_loss``, ``lr`` and ``flow``; returning True stops the run.
        checkpoint: file rewritten atomically after every epoch (by rank 0 only) with the
            flow, optimizer, schedule, shuffling and early-stopping state
            (:func:`~flowinfer.io.save_training_state`); ``fi.load`` reads the flow back.
        resume: a ``checkpoint`` file of an interrupted run with the same flow, data and
            options: training continues after its last epoch and ends as the uninterrupted
            run would have. ``seed`` may be left None (the saved one is used).
        distributed: data-parallel training on every rank of a ``torch.distributed``
            process group (launch with ``torchrun``; see :mod:`flowinfer.distributed`).
            ``batch_size`` is then the global batch, split evenly over the ranks.

    Returns:
        :class:`~flowinfer.training.FitResult` with ``history["train_loss"]``,
        ``history["val_loss"]`` (if validating) and ``history["lr"]`` per epoch (losses in
        nats per row), the 0-based ``best_epoch`` and its ``best_loss``, ``wall_time``,
        ``stop_reason`` and ``message``.

    Raises:
        ValueError: naming the argument, for bad data (shape, NaN/inf rows, wrong width,
            missing or mismatched context) and bad options.

    Example:
        >>> import flowinfer as fi
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> data = torch.randn(500, 2) * torch.tensor([2.0, 0.5]) + 1.0
        >>> flow = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(16,))
        >>> result = fit_density(flow, data, epochs=30, lr=1e-2, progress=False, seed=0)
        >>> result.history["val_loss"][-1] < result.history["val_loss"][0]
        True

    References:
        Papamakarios et al. (2021), "Normalizing Flows for Probabilistic Modeling and
        Inference", JMLR 22(57).
        Loshchilov & Hutter (2017), "SGDR: Stochastic Gradient Descent with Warm Restarts",
        ICLR (the cosine schedule).
    """
    _check_options(flow, epochs, batch_size, schedule, clip_grad, val_fraction, patience,
                   progress, seed, callback)
    x, c = _rows_and_context(data, context, flow, "data", "context")
    check_checkpoint_paths(checkpoint, resume)
    parallel = training_context(flow, distributed)
    saved = None if resume is None else read_training_state(resume, flow)
    if saved is not None and seed is not None and seed != saved["seed"]:
        raise ValueError(f"seed={seed} differs from the resumed run's seed {saved['seed']}; "
                         "leave seed=None to use the saved one")
    params = [p for p in flow.parameters() if p.requires_grad]
    if not params:
        raise ValueError("flow has no trainable parameters")
    optimizer = make_optimizer(params, lr, weight_decay)

    device = x.device
    if saved is not None:
        seed = saved["seed"]
    seed = parallel.shared_seed(seed, x)
    generator = torch.Generator(device=device).manual_seed(seed)

    if val_data is not None:
        x_val, c_val = _rows_and_context(val_data, None, flow, "val_data", "val_data[1] (context)")
        x_train, c_train = x, c
    elif val_fraction > 0:
        n = x.shape[0]
        n_val = max(1, round(n * val_fraction))
        if n - n_val < 1:
            raise ValueError(
                f"data has {n} rows: too few to hold out val_fraction={val_fraction} "
                "and keep a training row; pass more data or val_fraction=0"
            )
        order = torch.randperm(n, generator=generator, device=device)
        val_idx, train_idx = order[:n_val], order[n_val:]
        x_val, x_train = x[val_idx], x[train_idx]
        c_val, c_train = (None, None) if c is None else (c[val_idx], c[train_idx])
    else:
        x_val = c_val = None
        x_train, c_train = x, c

    n_train = x_train.shape[0]
    steps_per_epoch = parallel.steps_per_epoch(n_train, batch_size)
    local_batch = parallel.local_batch(batch_size)
    parallel.prepare(x_train, c_train, batch_size, seed)
    if schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs * steps_per_epoch)
    elif schedule == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=max(2, (patience or 20) // 4))
    else:
        scheduler = None
    step_scheduler = scheduler if schedule == "cosine" else None
    max_norm = math.inf if clip_grad is None else float(clip_grad)

    history: dict[str, list[float]] = {"train_loss": [], "lr": []}
    if x_val is not None:
        history["val_loss"] = []
    result = FitResult(history=history)
    monitor = "val_loss" if x_val is not None else "train_loss"
    best = BestState(flow)
    since_best = 0
    first_epoch = 0
    if saved is not None:
        first_epoch, since_best = restore_training_state(
            saved, flow, optimizer=optimizer, scheduler=scheduler, generator=generator,
            n_rows=n_train, history=history, best=best)
        if patience is not None and since_best >= patience:
            # The saved run had already stopped early after its last epoch.
            first_epoch = epochs
            result.stop_reason = "early_stopping"
            result.message = (f"the resumed run had stopped early after epoch "
                              f"{saved['epoch']}: no better {monitor} for {patience} epochs")
    start_time = time.perf_counter()
    epoch_bar = progress_bar(range(first_epoch, epochs), progress if parallel.is_main else False,
                             total=max(0, epochs - first_epoch), desc="fit_density")
    # The data were checked above; Pyro's per-batch support check of the base's input would
    # turn NaN parameters (a diverged step) into a ValueError instead of a non-finite loss
    # that stops the run and restores the best parameters.
    validation = pyro.validation_enabled(False)
    validation.__enter__()
    try:
        for epoch in epoch_bar:
            flow.train()
            lr_now = optimizer.param_groups[0]["lr"]
            order = parallel.epoch_order(n_train, generator, epoch)
            total = torch.zeros((), dtype=torch.float64, device=device)
            for begin in range(0, order.shape[0], local_batch):
                idx = order[begin:begin + local_batch]
                loss = parallel.nll(x_train[idx], None if c_train is None else c_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, max_norm)
                optimizer.step()
                if step_scheduler is not None:
                    step_scheduler.step()
                total += loss.detach().double() * idx.shape[0]
            train_loss = parallel.average(float(total), order.shape[0], x_train)
            history["train_loss"].append(train_loss)
            history["lr"].append(lr_now)
            if stop_on_non_finite(train_loss, epoch, best, result, what="training loss"):
                break
            val_loss = math.nan
            if x_val is not None:
                flow.eval()
                val_loss = parallel.mean_nll(x_val, c_val)
                history["val_loss"].append(val_loss)
                if stop_on_non_finite(val_loss, epoch, best, result, what="validation loss"):
                    break
            watched = history[monitor][-1]
            if best.update(watched, epoch):
                since_best = 0
            else:
                since_best += 1
            if schedule == "plateau":
                scheduler.step(watched)
            if hasattr(epoch_bar, "set_postfix"):
                epoch_bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
            if checkpoint is not None and parallel.is_main:
                save_training_state(
                    checkpoint, flow, optimizer=optimizer, scheduler=scheduler,
                    generator=generator, epoch=epoch, seed=seed, n_rows=n_train,
                    history=history, best=best, since_best=since_best)
            if parallel.any(callback is not None and callback(epoch, {
                "train_loss": train_loss, "val_loss": val_loss, "lr": lr_now, "flow": flow,
            }), x_train):
                result.stop_reason = "early_stopping"
                result.message = f"stopped by the callback after epoch {epoch}"
                break
            if patience is not None and since_best >= patience:
                result.stop_reason = "early_stopping"
                result.message = (
                    f"stopped early after epoch {epoch}: no better {monitor} for "
                    f"{patience} epochs"
                )
                break
    finally:
        validation.__exit__(None, None, None)
        flow.eval()
        parallel.close()
        if hasattr(epoch_bar, "close"):
            epoch_bar.close()

    if result.stop_reason != "non_finite_loss":
        best.restore()
        summary = (f"best {monitor} {best.loss:.4f} nats at epoch {best.step} "
                   "(its parameters are restored)")
        result.message = (f"{result.message}; {summary}" if result.message
                          else f"completed {epochs} epochs; {summary}")
    result.best_epoch, result.best_loss = best.step, best.loss
    result.wall_time = time.perf_counter() - start_time
    return result
