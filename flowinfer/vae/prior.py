"""A learnable flow prior ``p(z)`` for latent-variable models (VAEs) in Pyro.

The one trick that matters: register the prior with ``pyro.module`` **in the model**. Its
parameters belong to the generative model ``p(x, z) = p(x | z) p(z)``, so the ELBO trains them
jointly with the decoder (the prior moves toward the aggregate posterior, which is where the
flow's gain comes from). Nothing in Pyro trains a module that was never registered: an
unregistered prior silently stays at its starting point (the identity flow, i.e. N(0, I)), and
the "flow prior" VAE is the Gaussian one. Registering it in the guide happens to put the
parameters in the optimizer as well, but declares them variational: anything that runs the
model on its own (``poutine.trace(model)``, ``Predictive`` without a guide, a swapped guide)
no longer sees them as part of ``p``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
from torch import Tensor, nn

from flowinfer.checks import check_int
from flowinfer.flow import Flow
from flowinfer.registry import build_flow

__all__ = ["FlowPrior"]


class FlowPrior(nn.Module):
    """A learnable prior ``p(z)``: an unconditional normalizing flow on ``R^dim``.

    Calling the module returns a fresh Pyro distribution with ``batch_shape == ()`` and
    ``event_shape == (dim,)``; inside ``pyro.plate`` Pyro broadcasts it over the plates, so
    ``pyro.sample("z", prior())`` in a data plate of size ``N`` draws ``z`` of shape
    ``(N, dim)`` and scores each row with the flow density. ``prior().expand(batch)`` works too.

    Register it in the **model** with ``pyro.module`` (see the module docstring for why); the
    flow starts at the identity, so an untrained ``FlowPrior`` is the N(0, I) prior of a
    standard VAE (or a learnable diagonal Gaussian with ``base="learnable"``).

    The prior scores the guide's samples, so its ``log_prob`` runs on every ELBO step: use a
    flow with one-pass density (``"realnvp"``, ``"nsf"``, ``"maf"``, ``"nsf-ar"``). ``"iaf"``
    works but needs ``dim`` passes per density; flows without an inverse are rejected.

    Args:
        dim: latent dimension.
        flow: a registered flow name (see ``fi.available_flows()``) or an unconditional
            :class:`~flowinfer.Flow` with ``flow.dim == dim``.
        base: ``"standard"`` or ``"learnable"`` base of the built flow (names only).
        **hyper: hyper-parameters passed to ``fi.build_flow`` (``num_layers``, ``hidden``, ...).

    Raises:
        TypeError: ``dim`` is not an integer, ``flow`` neither a name nor a Flow.
        ValueError: ``dim < 1``; a Flow of another ``dim``, conditional, given together with
            hyper-parameters, or without an inverse (``flow.has_inverse`` is False).

    Example:
        >>> import pyro
        >>> prior = FlowPrior(2, flow="realnvp", num_layers=2, hidden=(16,))
        >>> def model(x):
        ...     pyro.module("prior", prior)          # in the model: p's parameters
        ...     with pyro.plate("data", x.shape[0]):
        ...         return pyro.sample("z", prior())
        >>> model(torch.zeros(5, 3)).shape
        torch.Size([5, 2])
        >>> prior().event_shape, prior().expand([5]).batch_shape
        (torch.Size([2]), torch.Size([5]))

    References:
        Tomczak & Welling (2018), "VAE with a VampPrior" (learned priors matching the
        aggregate posterior). Chen et al. (2017), "Variational Lossy Autoencoder" (flow priors).
        Dinh et al. (2017), "Density estimation using Real NVP" (the default flow).
    """

    def __init__(
        self, dim: int, flow: str | Flow = "realnvp", base: str = "standard", **hyper: Any
    ) -> None:
        super().__init__()
        dim = check_int(dim, "dim")
        if isinstance(flow, Flow):
            if hyper or base != "standard":
                given = sorted(hyper) + ([f"base={base!r}"] if base != "standard" else [])
                raise ValueError(
                    "hyper-parameters were given with a ready-built Flow; pass a flow name to "
                    f"build one, got flow=Flow(...) and {given}"
                )
            if flow.dim != dim:
                raise ValueError(f"flow.dim must equal dim={dim}, got flow.dim={flow.dim}")
            if flow.is_conditional:
                raise ValueError(
                    "flow must be unconditional (a prior has no context), got context_dim="
                    f"{flow.context_dim}"
                )
            name = flow.config["name"] if flow.config else None
            self.flow = flow
        elif isinstance(flow, str):
            name = flow
            self.flow = build_flow(flow, dim, base=base, **hyper)
        else:
            raise TypeError(
                f"flow must be a registered flow name or a flowinfer Flow, got "
                f"{type(flow).__name__}"
            )
        if not self.flow.has_inverse:
            label = f"flow {name!r}" if name is not None else "the given flow"
            raise ValueError(
                f"{label} has no inverse, so it cannot score the guide's samples; a "
                "prior needs log_prob of any z (use 'realnvp', 'nsf', 'maf' or 'nsf-ar')"
            )
        self.dim = dim

    def forward(self) -> dist.TransformedDistribution:
        """A fresh distribution with ``event_shape == (dim,)`` (no state between steps)."""
        return self.flow()

    def log_prob(self, z: Tensor) -> Tensor:
        """Log density of ``z`` of shape ``(..., dim)``; returns shape ``z.shape[:-1]``."""
        return self.flow.log_prob(z)

    def sample(self, sample_shape: Sequence[int] | torch.Size = ()) -> Tensor:
        """Prior draws of shape ``sample_shape + (dim,)``, without gradients."""
        return self.flow.sample(sample_shape)

    def to_checkpoint(self) -> dict[str, Any]:
        """Its flow and what rebuilds the prior around it (used by ``fi.save``)."""
        return {"flow": self.flow, "object": {"type": "FlowPrior"}}

    @classmethod
    def from_checkpoint(cls, flow: Flow, record: dict[str, Any], *, model: Any = None,
                        path: Any = "<checkpoint>", **_: Any) -> FlowPrior:
        """Rebuild a saved prior around its loaded ``flow`` (used by ``fi.load``)."""
        if model is not None:
            raise ValueError(f"model= was given but {path} holds a FlowPrior, not a guide")
        return cls(flow.dim, flow=flow).eval()

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
