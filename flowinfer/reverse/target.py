"""What reverse KL fits to: a batched log density, a target object, or a Pyro model.

:func:`resolve_target` turns any of them into one batched log density (a Pyro model through
its :class:`~flowinfer.inference.potential.ModelPotential`, in the unconstrained space).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from pyro import poutine
from torch import Tensor

from flowinfer.flow import Flow
from flowinfer.inference.potential import ModelPotential, check_model_args, check_model_kwargs
from flowinfer.train.losses import evaluate_target

__all__ = ["Resolved", "resolve_target", "check_flow", "check_dims",
           "check_target_is_defined", "LogDensity"]

LogDensity = Callable[[Tensor], Tensor]


class Resolved(NamedTuple):
    log_density: LogDensity
    dim: int | None
    source: Any



def _has_latent_sites(fn: Callable[..., Any]) -> bool:
    # A log density needs its x; only a callable that runs without arguments can be a model
    # here (models with arguments are recognised by model_args/model_kwargs).
    try:
        inspect.signature(fn).bind()
    except (TypeError, ValueError):
        return False
    try:
        with poutine.block():
            trace = poutine.trace(fn).get_trace()
    except Exception:  # noqa: BLE001 - not runnable without arguments: not a model
        return False
    return any(
        site["type"] == "sample" and not site["is_observed"] for site in trace.nodes.values()
    )


def resolve_target(target: Any, model_args: Any = (), model_kwargs: Any = None) -> Resolved:
    args, kwargs = check_model_args(model_args), check_model_kwargs(model_kwargs)
    if isinstance(target, ModelPotential):
        return Resolved(target.log_prob, target.dim, target)
    log_prob = getattr(target, "log_prob", None)
    dim = getattr(target, "dim", None)
    if callable(log_prob) and isinstance(dim, int):
        return Resolved(log_prob, dim, target)
    if not callable(target):
        raise ValueError(
            "target must be a log density callable f(x) -> (n,), an object with log_prob and "
            f"dim, or a Pyro model; got {type(target).__name__}"
        )
    if args or kwargs or _has_latent_sites(target):
        model = ModelPotential(target, *args, **kwargs)
        return Resolved(model.log_prob, model.dim, model)
    return Resolved(target, None, target)


def _check_last_dim(x: Tensor, dim: int, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() == 0 or x.shape[-1] != dim:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a tensor of shape (..., {dim}), got {shape}")


def check_flow(flow: Any) -> Flow:
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a flowinfer Flow, got {type(flow).__name__}")
    if flow.is_conditional:
        raise ValueError(
            f"flow is conditional (context_dim={flow.context_dim}); reverse KL fits an "
            "unconditional flow"
        )
    return flow


def check_dims(flow: Flow, resolved: Resolved) -> None:
    if resolved.dim is not None and resolved.dim != flow.dim:
        raise ValueError(
            f"flow has dim={flow.dim} but target has dim={resolved.dim}; build the flow "
            "with the target's dim"
        )


def check_target_is_defined(flow: Flow, log_density: LogDensity, num_samples: int) -> None:
    # A NaN at the start is a broken target, not a training failure: say so before any step
    # (-inf is allowed, it means "outside the support").
    with torch.no_grad():
        x = flow.sample((num_samples,))
        out = evaluate_target(log_density, x)
    bad = int(torch.isnan(out).sum())
    if bad:
        raise ValueError(
            f"target returned NaN for {bad} of {num_samples} points drawn from the initial "
            "flow; a log density must return a number, or -inf outside its support"
        )

