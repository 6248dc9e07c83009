"""``AutoAmortizedFlow``: a conditional flow ``q(z_i | x_i)`` for the local latent sites
of a data plate, with the context computed by a user-supplied encoder network.
"""


from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.util import sum_rightmost
from pyro.infer.autoguide import AutoGuide
from torch import Tensor
from torch.distributions import biject_to

from flowinfer.checks import check_int
from flowinfer.inference.sites import (
    _check_flow_arg,
    _improper_error,
    _make_flow,
    _raise_if_discrete,
)

__all__ = ['AutoAmortizedFlow']


class AutoAmortizedFlow(AutoGuide):
    """Amortized conditional-flow guide ``q(z_i | x_i)`` for the local latents of a data plate.

    Every latent site of ``model`` must sit in the same one ``pyro.plate`` (the data plate,
    at ``dim=-1``); per data point their unconstrained values are concatenated into one
    vector drawn from a conditional flow whose context is ``encoder(*args, **kwargs)``, a
    tensor of shape ``(N, context_dim)`` for the ``N`` data points in the plate (or for the
    full data set when the plate subsamples: rows are then picked by the plate's indices).
    For models that also have global latents, give those to another guide and combine them
    with ``AutoGuideList``, hiding the global sites from this one with ``poutine.block``.

    Args:
        model: a Pyro model whose latent sites are local to one data plate.
        encoder: an ``nn.Module`` called with the model's arguments, returning the context.
        context_dim: the encoder's output size.
        flow: a registered conditional flow name (``iaf`` default) or a callable
            ``(dim, context_dim=..., **hyper) -> Flow | list of transforms``.
        **flow_hyper: the flow's hyper-parameters.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyro.clear_param_store()
        >>> def model(x):
        ...     with pyro.plate("data", x.shape[0]):
        ...         z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        ...         pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)
        >>> encoder = torch.nn.Linear(2, 4)
        >>> guide = AutoAmortizedFlow(model, encoder, context_dim=4,
        ...                           num_layers=2, hidden=(16,))
        >>> guide(torch.randn(5, 2))["z"].shape
        torch.Size([5, 2])

    References:
        Kingma & Welling (2014), "Auto-Encoding Variational Bayes" (amortized inference).
        Kingma et al. (2016), "Improved Variational Inference with Inverse Autoregressive
        Flow". Winkler et al. (2019), "Learning Likelihoods with Conditional Normalizing
        Flows".
    """

    def __init__(
        self,
        model: Callable,
        encoder: Callable[..., Tensor],
        context_dim: int,
        flow: str | Callable = "iaf",
        **flow_hyper: Any,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
        if not callable(encoder):
            raise TypeError(
                f"encoder must be a callable (an nn.Module) returning the context, got "
                f"{type(encoder).__name__}"
            )
        check_int(context_dim, "context_dim")
        _check_flow_arg(flow)
        if isinstance(flow, str):
            from flowinfer.registry import get_flow_spec

            if not get_flow_spec(flow).supports_context:
                raise ValueError(f"flow {flow!r} does not support context; try 'iaf' or 'nsf'")
        super().__init__(model)
        self.encoder = encoder
        self.context_dim = context_dim
        self._flow_arg = flow
        self._flow_hyper = dict(flow_hyper)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        name = type(self).__name__
        try:
            super()._setup_prototype(*args, **kwargs)
        except NotImplementedError as e:
            raise _improper_error(name, self.model, args, kwargs, e) from e
        _raise_if_discrete(self.prototype_trace, name)
        sites = list(self.prototype_trace.iter_stochastic_nodes())
        if not sites:
            raise ValueError(f"{name} found no latent sites in the model")
        frame = None
        self._site_info: list[tuple[str, torch.Size, int]] = []
        for site_name, site in sites:
            stack = site["cond_indep_stack"]
            if len(stack) != 1 or stack[0].dim != -1:
                raise ValueError(
                    f"{name} handles latent sites inside exactly one data plate at dim=-1; "
                    f"site {site_name!r} is in plates {[f.name for f in stack]}. Give global "
                    "sites to another guide (AutoFlow, AutoNormal) and combine with "
                    "AutoGuideList, hiding them here with poutine.block."
                )
            if frame is not None and stack[0].name != frame.name:
                raise ValueError(
                    f"{name}: every latent site must share one plate, found {frame.name!r} "
                    f"and {stack[0].name!r}"
                )
            frame = stack[0]
            fn = site["fn"]
            if fn.batch_shape != (frame.size,):
                raise ValueError(
                    f"{name}: site {site_name!r} must have batch shape ({frame.size},) (the "
                    f"plate), got {tuple(fn.batch_shape)}; move extra dimensions into the "
                    "event with .to_event()"
                )
            u = biject_to(fn.support).inv(site["value"])
            event = u.shape[1:]
            self._site_info.append((site_name, event, math.prod(event)))
        self._frame = frame
        self.local_dim = sum(size for _, _, size in self._site_info)
        value = sites[0][1]["value"]
        flow = _make_flow(self._flow_arg, self.local_dim, self.context_dim, self._flow_hyper)
        self.flow = flow.to(device=value.device, dtype=value.dtype)

    def _context(self, *args: Any, **kwargs: Any) -> Tensor:
        # Reading self.encoder registers an nn.Module's parameters (PyroModule __getattr__).
        context = self.encoder(*args, **kwargs)
        if not isinstance(context, Tensor) or context.dim() != 2 or (
            context.shape[-1] != self.context_dim
        ):
            got = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise ValueError(
                f"encoder must return a tensor of shape (N, context_dim={self.context_dim}), "
                f"got {got}"
            )
        return context

    def _plate(self, rows: int) -> pyro.plate:
        frame = self._frame
        full = frame.full_size or frame.size
        if full != frame.size:
            # The model subsamples: mirror its plate; the model replays our indices.
            return pyro.plate(frame.name, full, subsample_size=frame.size, dim=frame.dim)
        # No subsampling: the plate is as large as the batch the encoder saw.
        return pyro.plate(frame.name, rows, dim=frame.dim)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Draw every local latent site given the model's arguments."""
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        context = self._context(*args, **kwargs)
        result = {}
        with self._plate(context.shape[0]) as indices:
            if context.shape[0] != indices.shape[0]:
                full = self._frame.full_size or self._frame.size
                if context.shape[0] != full:
                    raise ValueError(
                        f"encoder returned {context.shape[0]} rows, expected the plate's "
                        f"{indices.shape[0]} (subsample) or {full} (full data)"
                    )
                context = context.index_select(0, indices)
            latent = pyro.sample(
                f"_{self._pyro_name}_latent", self.flow(context), infer={"is_auxiliary": True}
            )
            pos = 0
            for site_name, event, size in self._site_info:
                site = self.prototype_trace.nodes[site_name]
                u = latent[..., pos : pos + size].reshape(latent.shape[:-1] + event)
                pos += size
                transform = biject_to(site["fn"].support)
                value = transform(u)
                log_density = transform.inv.log_abs_det_jacobian(value, u)
                log_density = sum_rightmost(
                    log_density, log_density.dim() - value.dim() + site["fn"].event_dim
                )
                result[site_name] = pyro.sample(
                    site_name,
                    dist.Delta(value, log_density=log_density, event_dim=site["fn"].event_dim),
                )
        return result
