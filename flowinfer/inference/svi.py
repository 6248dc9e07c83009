"""Data-parallel SVI: ``pyro.infer.SVI`` whose steps average gradients over all ranks.

References:
    Hoffman et al. (2013), "Stochastic Variational Inference", JMLR 14 (subsampled SVI).
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer.util import zero_grads

from flowinfer.train.process_group import (
    _all_sum,
    all_reduce_gradients,
    broadcast_parameters,
    get_world_size,
)

__all__ = ["DataParallelSVI"]


class DataParallelSVI(pyro.infer.SVI):
    """``pyro.infer.SVI`` whose steps average gradients over all ranks of a process group.

    Use it exactly like ``SVI`` in a script launched with ``torchrun``. The model should
    subsample its data with ``pyro.plate("data", N, subsample_size=b)`` (``N`` the full size,
    so the ELBO of each rank is an unbiased estimate of the full-data ELBO); seed each rank
    differently (``pyro.set_rng_seed(seed + rank)``) so the ranks draw different
    subsamples. The first step copies rank 0's initial parameters (the guide's and those the
    model registers, e.g. with ``pyro.module``) to every rank, then each
    step averages the gradients (one all-reduce) before the optimizer step, so all ranks
    keep identical parameters and the step uses ``world_size * b`` rows. ``step`` returns
    the loss averaged over the ranks. In one process it is plain ``SVI``.

    Args:
        model, guide, optim, loss: as for ``pyro.infer.SVI``.
        **kwargs: passed to ``pyro.infer.SVI``.

    Example:
        >>> import pyro, pyro.distributions as pdist
        >>> from pyro.infer.autoguide import AutoNormal
        >>> data = torch.randn(1000) + 3.0
        >>> def model():
        ...     mu = pyro.sample("mu", pdist.Normal(0.0, 10.0))
        ...     with pyro.plate("data", len(data), subsample_size=100) as idx:
        ...         pyro.sample("x", pdist.Normal(mu, 1.0), obs=data[idx])
        >>> pyro.clear_param_store()
        >>> svi = DataParallelSVI(model, AutoNormal(model), pyro.optim.Adam({"lr": 0.05}),
        ...                       pyro.infer.Trace_ELBO())
        >>> losses = [svi.step() for _ in range(300)]
        >>> abs(pyro.param("AutoNormal.locs.mu").item() - 3.0) < 0.3
        True

    References:
        Hoffman et al. (2013), "Stochastic Variational Inference", JMLR 14.
    """

    def __init__(self, model: Any, guide: Any, optim: Any, loss: Any, **kwargs: Any) -> None:
        super().__init__(model, guide, optim, loss, **kwargs)
        self._synced = False

    def step(self, *args: Any, **kwargs: Any) -> float:
        world = get_world_size()
        if world > 1 and not self._synced:
            self._sync_initial_parameters(*args, **kwargs)
        with poutine.trace(param_only=True) as capture:
            loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
        # Sorted by site name: every rank must all-reduce the same tensors in one order.
        names = sorted(capture.trace.nodes)
        params = [capture.trace.nodes[n]["value"].unconstrained() for n in names]
        all_reduce_gradients(params)
        self.optim(params)
        zero_grads(set(params))
        loss = float(loss)
        if world > 1:
            loss = _all_sum([loss], params[0] if params else torch.zeros(()))[0] / world
        return loss

    def _sync_initial_parameters(self, *args: Any, **kwargs: Any) -> None:
        # Guides and models create their parameters lazily (often from random draws): one
        # gradient-free ELBO evaluation makes them all exist, then rank 0's values win.
        with poutine.block():
            self.evaluate_loss(*args, **kwargs)
        store = pyro.get_param_store()
        names = sorted(store.keys())
        params = dict(store.named_parameters())
        broadcast_parameters([params[n] for n in names])
        self._synced = True
