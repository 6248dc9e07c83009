"""NeuTra HMC: NUTS in the whitened space of a fitted flow guide.
"""


from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from pyro import poutine

from flowinfer.checks import check_int
from flowinfer.inference.arviz import _to_numpy
from flowinfer.inference.importance import (
    _check_callables,
    _is_deterministic,
    _max_plate_nesting,
    _single_traces,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import arviz as az

__all__ = ['neutra_mcmc']


def neutra_mcmc(
    model: Callable, guide: Any, *args: Any, num_samples: int = 1000, warmup: int = 500,
    num_chains: int = 2, progress: bool | None = None, nuts_kwargs: dict | None = None,
    **kwargs: Any
) -> az.InferenceData:
    """NUTS in the flow-preconditioned space of a fitted ``AutoFlow`` (NeuTra HMC).

    Runs Pyro's ``NeuTraReparam``: the model is rewritten in terms of the guide's base
    variable ``eps ~ N(0, I)`` (``z = T(eps)``), where a good flow leaves a nearly isotropic
    posterior that NUTS explores easily. Chains run one after another (no worker
    processes), each from a different random start, so ArviZ's R-hat is meaningful.

    Args:
        model: the Pyro model.
        guide: a fitted ``fi.AutoFlow`` (or any ``AutoContinuous`` guide).
        *args, **kwargs: the model's arguments.
        num_samples: draws kept per chain.
        warmup: NUTS warm-up (adaptation) steps per chain.
        num_chains: chains (at least 2 for R-hat).
        progress: show Pyro's progress bar (default: when stderr is a TTY).
        nuts_kwargs: extra arguments for Pyro's ``NUTS`` (e.g. ``max_tree_depth``,
            ``target_accept_prob``, ``jit_compile``).

    Returns:
        ``arviz.InferenceData`` with ``posterior`` (chains x draws, constrained space, the
        model's latent and deterministic sites), ``observed_data``, and ``attrs`` holding
        the number of divergent transitions; use ``az.summary``/``az.rhat``/``az.ess``.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyro.clear_param_store()
        >>> from flowinfer.inference.autoflow import AutoFlow
        >>> def model():
        ...     pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        >>> guide = AutoFlow(model, num_layers=1, hidden=(8,))
        >>> _ = guide()                      # builds the guide (normally: train it first)
        >>> idata = neutra_mcmc(model, guide, num_samples=20, warmup=20, progress=False)
        >>> idata.posterior["z"].shape
        (2, 20, 2)

    References:
        Hoffman et al. (2019), "NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using
        Neural Transport". Hoffman & Gelman (2014), "The No-U-Turn Sampler".
    """
    import sys

    import arviz as az
    from pyro.infer import MCMC, NUTS, Predictive
    from pyro.infer.autoguide import AutoContinuous
    from pyro.infer.reparam import NeuTraReparam

    _check_callables(model, guide)
    if not isinstance(guide, AutoContinuous):
        raise TypeError(
            "guide must be an AutoContinuous guide such as fi.AutoFlow (NeuTraReparam needs "
            f"its transform), got {type(guide).__name__}"
        )
    check_int(num_samples, "num_samples")
    check_int(warmup, "warmup", 0)
    check_int(num_chains, "num_chains")
    if guide.prototype_trace is None:
        raise ValueError("the guide has not been run yet: fit it with SVI before neutra_mcmc")
    show = sys.stderr.isatty() if progress is None else bool(progress)
    if nuts_kwargs is not None and not isinstance(nuts_kwargs, dict):
        raise TypeError(f"nuts_kwargs must be a dict, got {type(nuts_kwargs).__name__}")

    grads = [p.requires_grad for p in guide.parameters()]
    guide.requires_grad_(False)  # NUTS must not push gradients into the guide
    quiet = warnings.catch_warnings()
    quiet.__enter__()
    # pyro.module warns once per frozen parameter on every model evaluation.
    warnings.filterwarnings("ignore", message=".*requires_grad=False")
    try:
        neutra = NeuTraReparam(guide)
        reparam_model = poutine.reparam(model, config=lambda _: neutra)
        chains, num_div = [], 0
        for _ in range(num_chains):
            mcmc = MCMC(NUTS(reparam_model, **(nuts_kwargs or {})), num_samples=num_samples,
                        warmup_steps=warmup, num_chains=1, disable_progbar=not show)
            mcmc.run(*args, **kwargs)
            divergences = mcmc.diagnostics().get("divergences", {})
            num_div += sum(len(v) for v in divergences.values())
            draws = mcmc.get_samples()
            # NeuTraReparam names the shared latent after the model's first latent site.
            chains.append(next(v for k, v in draws.items() if k.endswith("_shared_latent")))
        latents = torch.stack(chains)  # (chains, draws, latent_dim)
        with torch.no_grad():
            model_trace, guide_trace = _single_traces(model, guide, args, kwargs)
            # Batch dims of the latent must sit left of the model's plates.
            nesting = _max_plate_nesting(model_trace, guide_trace)
            flat = latents.reshape((-1,) + (1,) * nesting + latents.shape[-1:])
            samples = neutra.transform_sample(flat)
            samples = {k: v.reshape((flat.shape[0],) + model_trace.nodes[k]["value"].shape)
                       for k, v in samples.items()}
            deterministic = [n for n, s in model_trace.nodes.items()
                             if s["type"] == "sample" and _is_deterministic(s)]
            if deterministic:
                extra = Predictive(model, posterior_samples=samples,
                                   return_sites=deterministic)(*args, **kwargs)
                samples.update({k: extra[k] for k in deterministic})
    finally:
        quiet.__exit__(None, None, None)
        for p, g in zip(guide.parameters(), grads, strict=True):
            p.requires_grad_(g)
    total = num_chains * num_samples
    posterior = {}
    for name, value in samples.items():
        shape = model_trace.nodes[name]["value"].shape
        posterior[name] = _to_numpy(value.reshape((num_chains, num_samples) + tuple(shape)))
    observed = {
        name: _to_numpy(site["value"])
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and site["is_observed"] and not _is_deterministic(site)
    }
    attrs = {"inference_library": "pyro NUTS + NeuTraReparam (flowinfer)",
             "num_divergences": int(num_div), "num_draws": total}
    return az.from_dict(posterior=posterior, observed_data=observed, attrs=attrs)
