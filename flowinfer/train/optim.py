"""Optimiser, learning-rate schedule and progress bar for the training loop."""

from __future__ import annotations

import sys
from collections.abc import Iterable

import torch

from flowinfer.checks import check_number

__all__ = ["make_optimizer", "make_scheduler", "progress", "SCHEDULES"]

SCHEDULES = ("cosine", "plateau", None)


def make_optimizer(params: Iterable[torch.Tensor], lr: float,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam (AdamW when ``weight_decay > 0``) after checking the learning rate.

    Example:
        >>> layer = torch.nn.Linear(2, 1)
        >>> type(make_optimizer(layer.parameters(), 1e-3)).__name__
        'Adam'
    """
    lr = check_number(lr, "lr", low=0.0, low_open=True)
    weight_decay = check_number(weight_decay, "weight_decay", low=0.0)
    if weight_decay:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str | None, total_steps: int,
                   plateau_patience: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """``"cosine"`` (to zero over ``total_steps`` optimiser steps), ``"plateau"`` (halve the
    rate after ``plateau_patience`` evaluations without improvement) or None."""
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5,
                                                          patience=plateau_patience)
    return None


def progress(iterable: Iterable, enabled: bool | None, total: int | None = None,
             desc: str = ""):
    """A ``tqdm`` bar over ``iterable``; off when ``enabled`` is False or stderr is no TTY."""
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if enabled is None else enabled
    return tqdm(iterable, total=total, desc=desc, disable=not show, leave=False)
