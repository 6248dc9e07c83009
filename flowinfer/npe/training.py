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

import math
import time
import warnings
from typing import Any

import torch
from torch import Tensor

from flowinfer.npe.bounded import SupportLocation, bounded_sites, site_columns
from flowinfer.npe.loss import AtomicNPELoss, NPELoss
from flowinfer.npe.options import DEFAULT_TRAINING, auto_batch
from flowinfer.npe.regressed import RegressedFlow
from flowinfer.npe.selection import select_embedding
from flowinfer.npe.simulations import Simulations
from flowinfer.npe.standardize import PairScaling, regression_features

__all__ = ["train_round", "train_one", "fit_heads", "training_rows", "training_tensors",
           "validation_pairs"]


def train_round(npe: Any, sims: Simulations, train: dict, seed: int,
                progress: bool | None) -> Any:
    """Train ``npe`` on ``sims`` (every candidate first, if it still has several); returns
    the kept run's ``FitResult``."""
    # Standardised once: every candidate and the mixture's weights use the same pairs.
    data = training_tensors(npe, sims, (train, seed))
    fit_heads(npe, *data[:2], train=train, seed=seed)
    if len(npe._candidates) > 1:
        return select_embedding(npe, lambda: train_one(npe, *data, train=train, seed=seed,
                                                       progress=progress),
                                lambda: validation_pairs(*data, train=train, seed=seed))
    return train_one(npe, *data, train=train, seed=seed, progress=progress)


def fit_heads(npe: Any, z: Tensor, xs: Tensor, *, train: dict, seed: int) -> None:
    """Fit the regression of each untrained regressed member (``standardize="mixed"``) on
    the training rows of the standardised pairs ``(z, xs)``."""
    rows, locations = None, {}
    for candidate in npe._candidates:
        flow = candidate.flow
        if isinstance(flow, RegressedFlow) and not flow.head_fitted:
            if rows is None:
                rows = training_rows(z.shape[0], train, seed, z.device)
                rows = torch.arange(z.shape[0], device=z.device) if rows is None else rows
            pool = candidate.embedding.pool
            features = regression_features(xs[rows], pool)
            if pool not in locations:
                locations[pool] = _support_location(npe, z[rows], xs[rows], features)
            flow.fit_head(z[rows], features, locations[pool])


def _support_location(npe: Any, z: Tensor, xs: Tensor, features: Tensor
                      ) -> SupportLocation | None:
    """The bounded latents' location features (:mod:`flowinfer.npe.bounded`) fitted on the
    flow-space latents ``z``, standardised data ``xs`` and their regression ``features``
    (None when no latent site is bounded)."""
    sites = bounded_sites(npe.info)
    if not sites:
        return None
    u = npe.scaling.from_flow(z, xs)
    latents, _ = npe.info.to_constrained(u)
    theta = torch.cat([latents[s.name].reshape(len(u), -1) for s in sites], -1)
    theta_scale = npe.scaling.theta
    columns = site_columns(sites).to(theta_scale.mean.device)
    return SupportLocation.fit(sites, theta.detach(), features, theta_scale.mean[columns],
                               theta_scale.std[columns]).to(z.device)


def training_tensors(npe: Any, sims: Simulations,
                     split: tuple[dict, int] | None = None) -> tuple[Tensor, ...]:
    """The training tensors of ``sims``: standardised pairs ``(z, xs)`` (the scaling fitted
    first, if not yet; ``split``: the training options and seed whose training rows its
    regression sees). When ``npe.prior_pairs`` is set (``sequential="atomic"`` rounds)
    also, per pair, the flow-space offset of its data (``to_flow`` of zero), the prior log
    density of its unconstrained latents and 1.0 for a pair drawn from the prior (0.0 for
    a proposal's), the rest of :class:`~flowinfer.npe.loss.AtomicNPELoss`'s batch."""
    u, keep = npe.info.unconstrained_draws(sims.latents)
    from_prior = None
    if npe.prior_pairs is not None:
        from flowinfer.npe.sequential import unconstrained_log_prior

        log_prior = torch.full(keep.shape, -math.inf, dtype=u.dtype)
        log_prior[keep] = unconstrained_log_prior(npe, u[keep])
        keep = keep & torch.isfinite(log_prior)
        from_prior = torch.arange(keep.shape[0]) < npe.prior_pairs
    x = npe._pack_x(sims.observed)
    # Data on its support's bound (a positive value that underflowed to 0) is infinite on
    # the unconstrained scale that data_space="unconstrained" reads.
    edge = keep & ~torch.isfinite(x.reshape(x.shape[0], -1)).all(-1)
    if edge.any():
        warnings.warn(f"{int(edge.sum())} of {int(keep.sum())} simulations have data on the "
                      "bound of its support; dropped (data_space='raw' keeps them)",
                      stacklevel=4)
        keep = keep & ~edge
    u, x = u[keep].to(torch.get_default_dtype()), x[keep]
    if npe.scaling is None:
        rows = None if split is None else training_rows(u.shape[0], *split, u.device)
        npe.scaling = PairScaling.fit(u, x, standardize=npe.standardize, pool=npe._pool(),
                                      constant=npe.constant_data,
                                      data_name=f"data ({', '.join(npe.observed)})",
                                      rows=rows)
    xs = npe.scaling.data(x)
    z = npe.scaling.to_flow(u, xs)
    if from_prior is None:
        return z, xs
    return (z, xs, npe.scaling.latent(torch.zeros_like(z), xs), log_prior[keep].to(z.dtype),
            from_prior[keep].to(z.dtype))


def train_one(npe: Any, z: Tensor, x: Tensor, *atomic: Tensor, train: dict, seed: int,
              progress: bool | None) -> Any:
    """Fit ``npe.flow`` and ``npe.embedding`` on the standardised pairs ``(z, x)`` (with
    ``atomic``, the rest of :func:`training_tensors`, by the atomic loss); appends to
    ``npe.results``."""
    from flowinfer.train import fit

    batch = train["batch_size"] or auto_batch(z.shape[0])
    loss = (AtomicNPELoss(npe.flow, npe.embedding) if atomic
            else NPELoss(npe.flow, npe.embedding))
    npe.flow.train()
    npe.embedding.train()
    start = time.perf_counter()
    result = fit(loss, [npe.flow, npe.embedding],
                 data=(z, x, *atomic), val_fraction=train["val_fraction"], epochs=train["epochs"],
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


def validation_pairs(z: Tensor, x: Tensor, *atomic: Tensor, train: dict,
                     seed: int) -> tuple[Tensor, Tensor]:
    """The rows of ``(z, x)`` that ``train_one``'s loop holds out for validation (with
    ``atomic``, the rest of :func:`training_tensors`, only those drawn from the prior: the
    likelihood that weighs a mixture's members is the posterior's only for them)."""
    _, val = _split(z.shape[0], train, seed, z.device)
    if atomic:
        val = val[atomic[-1][val] > 0]
    return z[val], x[val]
