"""The ArviZ groups every flowinfer entry point returns, from posterior draws of a Pyro model.

``posterior`` (latent and deterministic sites), ``log_likelihood`` (per observed site and data
point, so ``az.loo``/``az.waic``/``az.compare`` work), ``posterior_predictive`` on request
(``az.plot_ppc``), ``observed_data`` and ``sample_stats``; the same shapes ``az.from_pyro``
gives an MCMC run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Predictive
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from flowinfer.inference.sites import is_deterministic

__all__ = ["model_sites", "complete_posterior", "log_likelihood", "posterior_predictive",
           "build_inference_data"]




def model_sites(model: Callable, args: tuple, kwargs: dict, values: dict[str, Tensor] | None
                = None) -> tuple[dict[str, torch.Size], list[str], dict[str, Tensor]]:
    """``(latent site shapes, deterministic site names, observed data)`` of one model run.

    With ``values`` the run is conditioned on them (one draw per site), else the model runs
    from its prior (``init_to_median_or_zero`` for flat sites).
    """
    from pyro.infer.autoguide.initialization import InitMessenger

    from flowinfer.inference.sites import init_to_median_or_zero

    run = (poutine.condition(model, data=values) if values is not None
           else InitMessenger(init_to_median_or_zero)(model))
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(run).get_trace(*args, **kwargs)
    latent, deterministic, observed = {}, [], {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if is_deterministic(site):
            deterministic.append(name)
        elif site["is_observed"]:
            observed[name] = site["value"].detach()
        elif not site["infer"].get("is_auxiliary", False):
            latent[name] = site["value"].shape
    return latent, deterministic, observed


def _vectorized_trace(model: Callable, samples: dict[str, Tensor], args: tuple, kwargs: dict
                      ) -> Any:
    with torch.no_grad():
        return Predictive(model, posterior_samples=samples, parallel=True
                          ).get_vectorized_trace(*args, **kwargs)


def _site_log_lik(site: dict, n: int) -> Tensor:
    fn = site["fn"]
    # Per data point: an observation written as one Independent (to_event) site is split back
    # into its points; a multivariate distribution's event stays one point.
    while isinstance(fn, dist.Independent):
        fn = fn.base_dist
    value = site["value"]
    ll = fn.log_prob(value)
    return ll


def _to_draw_shape(t: Tensor, n: int, shape: tuple[int, ...]) -> Tensor:
    """Reshape a vectorized value ``(n, 1, ..., *shape)`` (or broadcastable) to ``(n, *shape)``."""
    target_tail = tuple(shape)
    lead = t.dim() - len(target_tail)
    if lead < 1:
        t = t.reshape((1,) * (1 - lead) + tuple(t.shape))
        lead = 1
    t = t.expand(tuple(t.shape[:lead]) + target_tail)
    if t.shape[0] != n:
        t = t.expand((n,) + tuple(t.shape[1:]))
    return t.reshape((n,) + target_tail)


def _sequential(model: Callable, samples: dict[str, Tensor], args: tuple, kwargs: dict,
                fn: Callable[[Any], dict[str, Tensor]]) -> dict[str, Tensor]:
    n = next(iter(samples.values())).shape[0]
    out: dict[str, list[Tensor]] = {}
    with torch.no_grad(), poutine.block():
        for i in range(n):
            trace = poutine.trace(poutine.condition(model, data={k: v[i] for k, v in
                                                                 samples.items()})
                                  ).get_trace(*args, **kwargs)
            for k, v in fn(trace).items():
                out.setdefault(k, []).append(v)
    return {k: torch.stack(v) for k, v in out.items()}


def complete_posterior(model: Callable, samples: dict[str, Tensor], args: tuple, kwargs: dict
                       ) -> dict[str, Tensor]:
    """Add the model's ``pyro.deterministic`` sites to flat latent draws ``{site: (n, ...)}``."""
    _, deterministic, _ = model_sites(model, args, kwargs)
    missing = [d for d in deterministic if d not in samples]
    if not missing:
        return dict(samples)
    n = next(iter(samples.values())).shape[0]
    shapes = {d: s for d, s in _single_shapes(model, samples, args, kwargs).items()}
    try:
        trace = _vectorized_trace(model, samples, args, kwargs)
        extra = {d: _to_draw_shape(trace.nodes[d]["value"], n, shapes[d]) for d in missing}
    except Exception:  # noqa: BLE001 - a model that does not broadcast: one draw at a time
        extra = _sequential(model, samples, args, kwargs,
                            lambda tr: {d: tr.nodes[d]["value"] for d in missing})
    return {**samples, **extra}


def _single_shapes(model: Callable, samples: dict[str, Tensor], args: tuple, kwargs: dict
                   ) -> dict[str, tuple[int, ...]]:
    with torch.no_grad(), poutine.block():
        trace = poutine.trace(poutine.condition(model, data={k: v[0] for k, v in
                                                             samples.items()})
                              ).get_trace(*args, **kwargs)
    return {name: tuple(site["value"].shape) for name, site in trace.nodes.items()
            if site["type"] == "sample"}


def log_likelihood(model: Callable, samples: dict[str, Tensor], args: tuple, kwargs: dict
                   ) -> dict[str, Tensor]:
    """``log p(y_i | draw)`` per observed site and data point: ``{site: (n, *data shape)}``.

    ``samples`` holds flat draws ``(n, *site shape)`` of the latent sites.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(y):
        ...     z = pyro.sample("z", dist.Normal(0.0, 1.0))
        ...     pyro.sample("y", dist.Normal(z, 1.0).expand([3]).to_event(1), obs=y)
        >>> ll = log_likelihood(model, {"z": torch.zeros(5)}, (torch.zeros(3),), {})
        >>> ll["y"].shape
        torch.Size([5, 3])
    """
    n = next(iter(samples.values())).shape[0]
    shapes = _single_shapes(model, samples, args, kwargs)
    _, _, observed = model_sites(model, args, kwargs)

    def point_shape(site: dict) -> tuple[int, ...]:
        fn = site["fn"]
        while isinstance(fn, dist.Independent):
            fn = fn.base_dist
        shape = shapes[site["name"]]
        return tuple(shape[:len(shape) - len(fn.event_shape)])

    try:
        trace = _vectorized_trace(model, samples, args, kwargs)
        out = {}
        for name in observed:
            site = trace.nodes[name]
            out[name] = _to_draw_shape(_site_log_lik(site, n), n, point_shape(site))
        return out
    except Exception:  # noqa: BLE001 - a model that does not broadcast: one draw at a time
        return _sequential(model, samples, args, kwargs, lambda tr: {
            name: _site_log_lik(tr.nodes[name], 1).expand(point_shape(tr.nodes[name]))
            for name in observed})


def posterior_predictive(model: Callable, samples: dict[str, Tensor], args: tuple,
                         kwargs: dict) -> dict[str, Tensor]:
    """Replicated data ``{observed site: (n, *data shape)}``, one set per draw."""
    n = next(iter(samples.values())).shape[0]
    _, _, observed = model_sites(model, args, kwargs)
    with torch.no_grad():
        try:
            pred = Predictive(model, posterior_samples=samples, return_sites=list(observed),
                              parallel=True)(*args, **kwargs)
            return {k: _to_draw_shape(pred[k], n, tuple(observed[k].shape)) for k in observed}
        except Exception:  # noqa: BLE001 - fall back to one draw at a time
            pred = Predictive(model, posterior_samples=samples, return_sites=list(observed),
                              parallel=False)(*args, **kwargs)
            return {k: pred[k].reshape((n,) + tuple(observed[k].shape)) for k in observed}


def _np(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy()


def build_inference_data(model: Callable, args: tuple, kwargs: dict,
                         posterior: dict[str, Tensor], num_chains: int, *,
                         sample_stats: dict[str, Tensor] | None = None,
                         predictive: bool = False, attrs: dict | None = None):
    """An ``InferenceData`` with all the groups above from flat draws ``(chains*draws, ...)``.

    ``posterior`` may hold latent sites only; deterministic sites are added. Rows are chain
    after chain (``draws`` per chain).
    """
    import arviz as az

    latent, deterministic, observed = model_sites(model, args, kwargs)
    latents = {k: v for k, v in posterior.items() if k in latent}
    full = complete_posterior(model, latents, args, kwargs)
    full.update({k: v for k, v in posterior.items() if k not in full})
    n = next(iter(full.values())).shape[0]
    if n % num_chains:
        raise ValueError(f"{n} draws do not split into {num_chains} chains")
    draws = n // num_chains

    def shaped(t: Tensor) -> np.ndarray:
        return _np(t.reshape((num_chains, draws) + tuple(t.shape[1:])))

    groups: dict[str, Any] = {"posterior": {k: shaped(v) for k, v in full.items()}}
    if observed:
        groups["observed_data"] = {k: _np(v) for k, v in observed.items()}
        ll = log_likelihood(model, latents, args, kwargs)
        groups["log_likelihood"] = {k: shaped(v) for k, v in ll.items()}
        if predictive:
            pp = posterior_predictive(model, latents, args, kwargs)
            groups["posterior_predictive"] = {k: shaped(v) for k, v in pp.items()}
    if sample_stats:
        groups["sample_stats"] = {k: shaped(v) for k, v in sample_stats.items()}
    clean_attrs = {k: _attr(v) for k, v in (attrs or {}).items()}
    return az.from_dict(**groups, attrs=clean_attrs)


def _attr(value: Any) -> Any:
    # netCDF attributes must be numbers, strings or arrays of them: nested records become
    # JSON text so idata.to_netcdf() keeps working.
    import json

    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return json.dumps(value, default=lambda o: o if isinstance(o, int | str) else
                      (float(o) if isinstance(o, float | np.floating) else str(o)))
