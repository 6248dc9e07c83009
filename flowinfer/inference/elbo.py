"""The ELBO of a Pyro model and guide as a loss object for ``flowinfer.train.fit``.

``fit`` then runs variational inference like ``pyro.infer.SVI`` does, with what the generic
loop adds: plateau stopping on a smoothed loss, restore-the-best, and recovery from a
non-finite step (restore the last good parameters, halve the step size).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pyro.infer import Trace_ELBO
from torch import Tensor, nn

from flowinfer.checks import check_int
from flowinfer.train.losses import Loss

__all__ = ["ELBOLoss"]

#: Fresh draws tried before a step is reported non-finite: a guide whose tail reaches a
#: region where the model raises or is NaN fails on a few draws, not on every one.
_RETRIES = 3


class ELBOLoss(Loss):
    """Negative ELBO of ``guide`` for ``model`` (Pyro's ``Trace_ELBO``), for ``fi.train.fit``.

    Particles are vectorized when the model broadcasts over a leading batch dimension, and
    drawn one after another otherwise (found out on the first call). Model errors at a draw
    (Pyro's validation of NaN parameters, a failed Cholesky) give a ``nan`` loss, which
    ``fit(on_non_finite="recover")`` answers by restoring the last good parameters.

    Args:
        model: the Pyro model.
        guide: its guide (an ``nn.Module``, e.g. ``fi.AutoFlow``); called once here so that
            its parameters exist before ``fit`` collects them.
        args, kwargs: the model's arguments.
        num_particles: draws per ELBO estimate.
        potential: the model's :class:`~flowinfer.inference.potential.ModelPotential` over
            the guide's latent vector (e.g. ``guide._potential(args, kwargs)``). With it the
            ELBO is ``mean(log p(u) - log q(u))`` over ``u ~ q`` drawn by the guide's own
            ``get_posterior()`` and scored by the batched (``torch.vmap``) potential, which
            skips Pyro's per-step guide and model traces; without it Pyro's
            ``Trace_ELBO``. Both are the same estimator.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> from flowinfer.inference.autoflow import AutoFlow
        >>> from flowinfer.train import fit
        >>> pyro.clear_param_store()
        >>> def model():
        ...     pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        >>> guide = AutoFlow(model, num_layers=1, hidden=(8,))
        >>> loss = ELBOLoss(model, guide, num_particles=4)
        >>> result = fit(loss, steps=20, lr=1e-2, progress_bar=False, seed=0)
        >>> len(result.history["loss"])
        20

    References:
        Wingate & Weber (2013), "Automated Variational Inference in Probabilistic
        Programming".
    """

    def __init__(self, model: Callable, guide: nn.Module, args: tuple = (),
                 kwargs: dict | None = None, num_particles: int = 8, *,
                 potential: Any = None) -> None:
        if not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        if not isinstance(guide, nn.Module):
            raise TypeError(f"guide must be an nn.Module guide (e.g. fi.AutoFlow), got "
                            f"{type(guide).__name__}")
        self.model, self.guide = model, guide
        self.args, self.kwargs = tuple(args), dict(kwargs or {})
        self.num_particles = check_int(num_particles, "num_particles")
        with torch.no_grad():
            guide(*self.args, **self.kwargs)  # creates the parameters
        self.modules = [guide]
        self.potential = potential
        if potential is not None and not hasattr(guide, "get_posterior"):
            raise TypeError("potential= needs an AutoContinuous guide (with get_posterior)")
        self._elbo: Trace_ELBO | None = None

    def _make_elbo(self) -> Trace_ELBO:
        if self.num_particles == 1:
            return Trace_ELBO()
        try:
            elbo = Trace_ELBO(num_particles=self.num_particles, vectorize_particles=True,
                              max_plate_nesting=self._plate_nesting())
            with torch.no_grad():
                elbo.differentiable_loss(self.model, self.guide, *self.args, **self.kwargs)
            return elbo
        except Exception:  # noqa: BLE001 - the model does not broadcast: draw one by one
            return Trace_ELBO(num_particles=self.num_particles)

    def _plate_nesting(self) -> int:
        from pyro import poutine

        with torch.no_grad(), poutine.block():
            guide_trace = poutine.trace(self.guide).get_trace(*self.args, **self.kwargs)
            model_trace = poutine.trace(poutine.replay(self.model, trace=guide_trace)
                                        ).get_trace(*self.args, **self.kwargs)
        return max((-f.dim for tr in (model_trace, guide_trace) for site in tr.nodes.values()
                    if site["type"] == "sample" for f in site["cond_indep_stack"]
                    if f.vectorized), default=0)

    def __call__(self, batch: Any = None) -> Tensor:
        if self.potential is not None:
            posterior = self.guide.get_posterior(*self.args, **self.kwargs)
            u = posterior.rsample((self.num_particles,))
            log_q = posterior.log_prob(u)
            log_p = self.potential.log_prob(u, safe=True)
            return (log_q - log_p).mean()
        if self._elbo is None:
            self._elbo = self._make_elbo()
        for _ in range(_RETRIES):
            try:
                value = self._elbo.differentiable_loss(self.model, self.guide, *self.args,
                                                       **self.kwargs)
            except (ValueError, RuntimeError):
                continue
            if bool(torch.isfinite(value)):
                return value
        # Draws where the model's distributions got invalid parameters, again and again:
        # report a non-finite loss, which the loop treats as a failed step (not a crash).
        return torch.tensor(float("nan"), requires_grad=True)
