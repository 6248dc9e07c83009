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
                 kwargs: dict | None = None, num_particles: int = 8) -> None:
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
        self._elbo: Trace_ELBO | None = None

    def _make_elbo(self) -> Trace_ELBO:
        if self.num_particles == 1:
            return Trace_ELBO()
        try:
            elbo = Trace_ELBO(num_particles=self.num_particles, vectorize_particles=True)
            with torch.no_grad():
                elbo.differentiable_loss(self.model, self.guide, *self.args, **self.kwargs)
            return elbo
        except Exception:  # noqa: BLE001 - the model does not broadcast: draw one by one
            return Trace_ELBO(num_particles=self.num_particles)

    def __call__(self, batch: Any = None) -> Tensor:
        if self._elbo is None:
            self._elbo = self._make_elbo()
        try:
            return self._elbo.differentiable_loss(self.model, self.guide, *self.args,
                                                  **self.kwargs)
        except (ValueError, RuntimeError):
            # A draw where the model's distributions got invalid parameters: report a
            # non-finite loss, which the loop treats as a failed step (not a crash).
            return torch.tensor(float("nan"), requires_grad=True)
