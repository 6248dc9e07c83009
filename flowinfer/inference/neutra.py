"""NeuTra HMC: NUTS in the whitened space of a fitted flow guide.
"""


from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from pyro import poutine

from flowinfer.checks import check_int
from flowinfer.inference.groups import build_inference_data
from flowinfer.inference.importance import (
    _check_callables,
    _max_plate_nesting,
    _single_traces,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import arviz as az

__all__ = ['neutra_mcmc']


def neutra_mcmc(
    model: Callable, guide: Any, *args: Any, num_samples: int = 1000, warmup: int = 500,
    num_chains: int = 2, progress: bool | None = None, nuts_kwargs: dict | None = None,
    posterior_predictive: bool = False, **kwargs: Any
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
        posterior_predictive: also draw replicated data for every observed site.

    Returns:
        ``arviz.InferenceData`` with ``posterior`` (chains x draws, constrained space, the
        model's latent and deterministic sites), ``sample_stats`` (``diverging``),
        ``log_likelihood`` (per observed site and data point), ``observed_data``,
        ``posterior_predictive`` on request, and ``attrs`` holding the number of divergent
        transitions; use ``az.summary``/``az.rhat``/``az.ess``/``az.loo``.

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

    from pyro.infer import MCMC, NUTS
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
    if not isinstance(posterior_predictive, bool):
        raise TypeError(f"posterior_predictive must be a bool, got "
                        f"{type(posterior_predictive).__name__}")
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
        chains, num_div, diverging = [], 0, []
        for _ in range(num_chains):
            mcmc = MCMC(NUTS(reparam_model, **(nuts_kwargs or {})), num_samples=num_samples,
                        warmup_steps=warmup, num_chains=1, disable_progbar=not show)
            mcmc.run(*args, **kwargs)
            divergences = mcmc.diagnostics().get("divergences", {})
            num_div += sum(len(v) for v in divergences.values())
            flags = torch.zeros(num_samples, dtype=torch.bool)
            for steps in divergences.values():
                flags[torch.as_tensor(steps, dtype=torch.long)] = True
            diverging.append(flags)
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
    finally:
        quiet.__exit__(None, None, None)
        for p, g in zip(guide.parameters(), grads, strict=True):
            p.requires_grad_(g)
    total = num_chains * num_samples
    attrs = {"inference_library": "pyro NUTS + NeuTraReparam (flowinfer)",
             "num_divergences": int(num_div), "num_draws": total}
    return build_inference_data(model, args, kwargs, samples, num_chains,
                                sample_stats={"diverging": torch.cat(diverging)},
                                predictive=posterior_predictive, attrs=attrs)
