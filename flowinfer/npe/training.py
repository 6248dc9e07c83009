"""One round of NPE training: the flow and embedding fitted by maximum likelihood, or each
``"auto"`` candidate fitted and one kept (or all mixed) by :mod:`flowinfer.npe.selection`.

The loss is :class:`~flowinfer.npe.loss.NPELoss` in the generic loop
:func:`flowinfer.train.fit` (validation split, early stopping, plateau schedule).

Example:
    >>> import pyro, pyro.distributions as dist, flowinfer as fi
    >>> def model():
    ...     theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
    ...     pyro.sample("x", dist.Normal(theta, 0.5))
    >>> npe = fi.NPE(model, "x", embedding="mlp", flow_options={"num_layers": 1})
    >>> from flowinfer.npe.options import training_options
    >>> sims = fi.simulate(model, "x", 200, seed=0)
    >>> npe.simulations = sims
    >>> result = train_round(npe, sims, training_options(2, None, None, None, None), 0, False)
    >>> len(result.history["train_loss"])
    2

References:
    Papamakarios & Murray (2016), "Fast epsilon-free inference of simulation models with
    Bayesian conditional density estimation", NeurIPS.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from flowinfer.npe.loss import NPELoss
from flowinfer.npe.options import DEFAULT_TRAINING, auto_batch
from flowinfer.npe.selection import select_embedding
from flowinfer.npe.simulations import Simulations

__all__ = ["train_round", "train_one", "training_rows", "validation_pairs"]


def train_round(npe: Any, sims: Simulations, train: dict, seed: int,
                progress: bool | None) -> Any:
    """Train ``npe`` on ``sims`` (every candidate first, if it still has several); returns
    the kept run's ``FitResult``."""
    # Standardised once: every candidate and the mixture's weights use the same pairs.
    z, x = npe._training_tensors(sims, (train, seed))
    if len(npe._candidates) > 1:
        return select_embedding(npe, lambda: train_one(npe, z, x, train, seed, progress),
                                lambda: validation_pairs(z, x, train, seed))
    return train_one(npe, z, x, train, seed, progress)


def train_one(npe: Any, z: Tensor, x: Tensor, train: dict, seed: int,
              progress: bool | None) -> Any:
    """Fit ``npe.flow`` and ``npe.embedding`` on the standardised pairs ``(z, x)``; appends
    to ``npe.results``."""
    from flowinfer.train import fit

    batch = train["batch_size"] or auto_batch(z.shape[0])
    npe.flow.train()
    npe.embedding.train()
    start = time.perf_counter()
    result = fit(NPELoss(npe.flow, npe.embedding), [npe.flow, npe.embedding],
                 data=(z, x), val_fraction=train["val_fraction"], epochs=train["epochs"],
                 batch_size=batch, lr=train["lr"], weight_decay=train["weight_decay"],
                 schedule=DEFAULT_TRAINING["schedule"],
                 clip_grad=DEFAULT_TRAINING["clip_grad"], patience=train["patience"],
                 seed=seed, progress_bar=progress, desc="NPE")
    npe.timings["training"] += time.perf_counter() - start
    npe.flow.eval()
    npe.embedding.eval()
    npe.results.append(result)
    return result


def _split(n: int, train: dict, seed: int, device: Any) -> tuple[Tensor, Tensor]:
    from flowinfer.train.minibatch import split_rows

    return split_rows(n, train["val_fraction"],
                      torch.Generator(device=device).manual_seed(seed))


def training_rows(n: int, train: dict, seed: int, device: Any = "cpu") -> Tensor | None:
    """The rows of ``n`` pairs (on ``device``) that ``train_one``'s loop trains on (None:
    all, when there is no validation split)."""
    return _split(n, train, seed, device)[0] if train["val_fraction"] > 0 else None


def validation_pairs(z: Tensor, x: Tensor, train: dict, seed: int) -> tuple[Tensor, Tensor]:
    """The rows of ``(z, x)`` that ``train_one``'s loop holds out for validation."""
    _, val = _split(z.shape[0], train, seed, z.device)
    return z[val], x[val]
