"""Helpers about a Pyro model's sites shared by the guides and the potential:
initialisation, discrete and improper sites, the guide's flow.
"""


from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger, init_to_median
from torch.distributions import biject_to

from flowinfer.checks import check_number
from flowinfer.flow import Flow
from flowinfer.registry import build_flow

__all__ = ['init_to_median_or_zero', 'GUIDE_FLOW_DEFAULTS', 'is_deterministic']


_SCALES = ("diagonal", "full")
_WARM_STARTS = ("laplace", None)
#: Draws used to compare the candidate starting Gaussians by their ELBO.
_WARM_START_DRAWS = 64


def is_deterministic(site: dict) -> bool:
    """A ``pyro.deterministic`` site, or a site a reparameterisation turned into one.

    ``poutine.reparam`` leaves the original site in the trace as an observed ``Delta`` whose
    log density is masked out: a value computed from the new latent sites, not data.

    Example:
        >>> import torch, pyro
        >>> def model():
        ...     pyro.deterministic("d", torch.zeros(()))
        >>> site = pyro.poutine.trace(model).get_trace().nodes["d"]
        >>> is_deterministic(site)
        True
    """
    if site["infer"].get("_deterministic", False):
        return True
    fn = site["fn"]
    return bool(site.get("is_observed")) and isinstance(fn, dist.MaskedDistribution) and (
        fn._mask is False and isinstance(fn.base_dist, dist.Delta))


def init_to_median_or_zero(site: dict | None = None, num_samples: int = 15):
    """``init_to_median``, except that flat-prior sites start at zero in unconstrained space.

    ``dist.ImproperUniform`` (a flat prior) cannot be sampled, so Pyro's sampling
    initialisers (``init_to_median``, ``init_to_feasible``, ``init_to_uniform``) fail on it;
    this one maps zero through ``biject_to(support)`` there (e.g. ``sigma = 1`` on a positive
    support).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyro.clear_param_store()
        >>> from pyro.distributions import constraints
        >>> def model():
        ...     pyro.sample("b", dist.ImproperUniform(constraints.positive, (), ()))
        >>> from flowinfer import AutoFlow
        >>> guide = AutoFlow(model, init_loc_fn=init_to_median_or_zero, num_layers=1)
        >>> float(guide.median()["b"]) > 0
        True

    References:
        Pyro's initialisation strategies (``pyro.infer.autoguide.initialization``).
    """
    if site is None:
        return lambda site: init_to_median_or_zero(site, num_samples)
    fn = site["fn"]
    if isinstance(fn, dist.ImproperUniform) or isinstance(
        getattr(fn, "base_dist", None), dist.ImproperUniform
    ):
        transform = biject_to(fn.support)
        shape = transform.inverse_shape(fn.shape())
        zero = torch.zeros(shape, dtype=torch.get_default_dtype())
        return transform(zero)
    return init_to_median(site, num_samples=num_samples)


def _check_init_scale(init_scale: Any) -> float:
    return check_number(init_scale, "init_scale", low=0.0, low_open=True)


def _check_flow_arg(flow: Any) -> None:
    if not (isinstance(flow, str) or callable(flow)):
        raise TypeError(
            "flow must be a registered flow name (see fi.available_flows()) or a callable "
            f"dim -> Flow or list of transforms, got {type(flow).__name__}"
        )


#: Guide defaults that differ from the registry's density-estimation defaults. Early in SVI
#: the ELBO gradient is huge and consistent (e.g. "make sigma larger"); Adam moves every
#: weight by about lr whatever the gradient's size, and per-layer log-scales compound over the
#: layers, so with a bound of 5 a few steps can push the latent to exp(100s). A bound of 2
#: still lets five layers rescale a coordinate by e^10.
GUIDE_FLOW_DEFAULTS = {"log_scale_bound": 2.0}


def _make_flow(flow: str | Callable, dim: int, context_dim: int, hyper: dict) -> Flow:
    if isinstance(flow, str):
        import inspect

        from flowinfer.registry import get_flow_spec

        accepted = inspect.signature(get_flow_spec(flow).factory).parameters
        defaults = {k: v for k, v in GUIDE_FLOW_DEFAULTS.items() if k in accepted}
        return build_flow(flow, dim, context_dim=context_dim, **{**defaults, **hyper})
    made = flow(dim, context_dim=context_dim, **hyper) if context_dim else flow(dim, **hyper)
    if isinstance(made, Flow):
        return made
    if isinstance(made, Sequence):
        return Flow(list(made), dim=dim, context_dim=context_dim)
    raise TypeError(
        f"the flow callable must return a flowinfer Flow or a list of transforms, got "
        f"{type(made).__name__}"
    )


def _raise_if_discrete(trace: Any, guide_name: str, cause: Exception | None = None) -> None:
    discrete = [
        name
        for name, site in trace.iter_stochastic_nodes()
        if getattr(site["fn"].support, "is_discrete", False)
    ]
    if discrete:
        raise ValueError(
            f"{guide_name} handles continuous latent sites only, but the model has discrete "
            f"latent site(s) {discrete}. Enumerate them out of the model with "
            "@pyro.infer.config_enumerate and TraceEnum_ELBO, and give the flow guide the "
            f"rest: AutoFlow(poutine.block(model, hide={discrete})); or combine guides with "
            "pyro.infer.autoguide.AutoGuideList (e.g. AutoDiscreteParallel for the discrete "
            "sites)."
        ) from cause


def _improper_sites(model: Callable, args: tuple, kwargs: dict) -> list[str]:
    # Find the sites that cannot be sampled, using an init strategy that never samples them.
    try:
        trace = poutine.trace(InitMessenger(init_to_median_or_zero)(model)).get_trace(
            *args, **kwargs)
    except Exception:  # noqa: BLE001 - only used to improve an error message
        return []
    return [
        name
        for name, site in trace.iter_stochastic_nodes()
        if isinstance(site["fn"], dist.ImproperUniform)
        or isinstance(getattr(site["fn"], "base_dist", None), dist.ImproperUniform)
    ]


def _improper_error(guide_name: str, model: Callable, args: tuple, kwargs: dict,
                    cause: Exception) -> ValueError:
    sites = _improper_sites(model, args, kwargs)
    where = f" (site(s) {sites} use ImproperUniform, a flat prior)" if sites else ""
    return ValueError(
        f"{guide_name} could not initialise: a latent site's distribution cannot be sampled"
        f"{where}, and init_loc_fn draws from it. Pass an init_loc_fn that does not sample, "
        "e.g. init_loc_fn=flowinfer.init_to_median_or_zero or "
        "pyro.infer.autoguide.init_to_value(values={...}) covering those sites (Pyro's "
        "init_to_feasible and init_to_uniform sample too)."
    )
