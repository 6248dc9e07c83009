"""Density estimation: fit a flow to data by maximum likelihood (forward KL).

Minimising the mean negative log-likelihood ``-1/n sum_i log q(x_i)`` of the data equals
minimising ``KL(p_data || q)`` up to the data's entropy, which does not depend on ``q``; so
on data with a known density the best possible test loss is that entropy, and the gap to it
measures the fit (``docs/density.md``). The training itself is :func:`flowinfer.train.fit`
with the :class:`~flowinfer.train.losses.MaximumLikelihood` loss.

References:
    Papamakarios et al. (2021), "Normalizing Flows for Probabilistic Modeling and
    Inference", JMLR 22(57).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from torch import Tensor

from flowinfer.flow import Flow
from flowinfer.train.loop import fit
from flowinfer.train.losses import MaximumLikelihood
from flowinfer.train.rows import rows_and_context
from flowinfer.train.state import FitResult
from flowinfer.train.strategy import EVAL_BATCH, evaluate_rows

__all__ = ["fit_density", "mean_nll"]

Callback = Callable[[int, dict[str, Any]], Any]


def mean_nll(flow: Flow, x: Tensor, context: Tensor | None = None,
             batch_size: int = EVAL_BATCH) -> float:
    """Mean negative log-likelihood of the rows of ``x`` under ``flow``, in nats per row.

    Evaluated in batches without gradients; the flow's train/eval mode is left as it is.

    Example:
        >>> import torch, flowinfer as fi
        >>> flow = fi.build_flow("realnvp", dim=2, num_layers=1, hidden=(8,))  # N(0, I)
        >>> round(mean_nll(flow, torch.zeros(10, 2)), 4)  # log(2 pi)
        1.8379
    """
    rows = (x,) if context is None else (x, context)
    return evaluate_rows(MaximumLikelihood(flow).evaluate, rows, batch_size)


def _check_flow(flow: Any) -> Flow:
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a flowinfer Flow (see build_flow), got "
                        f"{type(flow).__name__}")
    if not flow.has_inverse:
        name = (flow.config or {}).get("name", "this flow")
        raise ValueError(
            f"flow {name!r} has no analytic inverse, so the log density of data cannot be "
            "computed; fit_density needs a flow such as 'nsf', 'maf' or 'realnvp'"
        )
    return flow


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
    or infinite loss stops the run with a :class:`~flowinfer.train.state.NonFiniteLossWarning`
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
            (:mod:`flowinfer.train.checkpoint`); ``fi.load`` reads the flow back.
        resume: a ``checkpoint`` file of an interrupted run with the same flow, data and
            options: training continues after its last epoch and ends as the uninterrupted
            run would have. ``seed`` may be left None (the saved one is used).
        distributed: data-parallel training on every rank of a ``torch.distributed``
            process group (launch with ``torchrun``; see :mod:`flowinfer.train.strategy`).
            ``batch_size`` is then the global batch, split evenly over the ranks.

    Returns:
        :class:`~flowinfer.train.state.FitResult` with ``history["train_loss"]``,
        ``history["val_loss"]`` (if validating) and ``history["lr"]`` per epoch (losses in
        nats per row), the 0-based ``best_epoch`` and its ``best_loss``, ``wall_time``,
        ``stop_reason`` and ``message``.

    Raises:
        TypeError: naming the argument, for a flow that is not a Flow and options of the
            wrong type.
        ValueError: naming the argument, for bad data (shape, NaN/inf rows, wrong width,
            missing or mismatched context), a flow without an analytic inverse, and option
            values out of range.

    Example:
        >>> import torch, flowinfer as fi
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
    _check_flow(flow)
    x, c = rows_and_context(data, context, flow, "data", "context")
    val = None
    if val_data is not None:
        x_val, c_val = rows_and_context(val_data, None, flow, "val_data",
                                        "val_data[1] (context)")
        val = (x_val,) if c_val is None else (x_val, c_val)
    if callback is not None and callable(callback):
        user_callback = callback

        def callback(epoch: int, info: dict[str, Any]) -> Any:
            info = {k: v for k, v in info.items() if k != "modules"}
            return user_callback(epoch, {**info, "flow": flow})

    return fit(MaximumLikelihood(flow), flow, data=(x,) if c is None else (x, c),
               val_data=val, val_fraction=val_fraction, epochs=epochs, batch_size=batch_size,
               lr=lr, weight_decay=weight_decay, schedule=schedule, clip_grad=clip_grad,
               patience=patience, progress_bar=progress, seed=seed, callback=callback,
               checkpoint=checkpoint, resume=resume, distributed=distributed,
               desc="fit_density")
