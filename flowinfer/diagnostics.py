"""How good is a variational fit? ELBO, log-evidence, PSIS k-hat, ESS, ArviZ output, NeuTra.

Everything here draws ``x_i ~ q`` from a fitted guide and weighs each draw by
``log w_i = log p(x_i, data) - log q(x_i)`` (Pyro's ``vectorized_importance_weights``):

* the ELBO is ``mean(log w)``, with standard error ``sd(log w) / sqrt(n)``;
* ``log mean(w)`` estimates the log evidence ``log p(data)`` (an upper-tighter bound than
  the ELBO), with its delta-method standard error (``flowinfer.evidence``);
* the Pareto k-hat of the weights' tail says whether these estimates, and the guide as a
  proposal, can be trusted (Yao et al. 2018): below 0.5 good, 0.5-0.7 usable, above 0.7 the
  guide misses posterior mass and the estimates are unreliable.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.infer.importance import vectorized_importance_weights
from torch import Tensor

from flowinfer.evidence import ImportanceSummary, importance_summary, khat_reading

__all__ = ["DiagnosticReport", "diagnose", "to_inference_data", "neutra_mcmc",
           "importance_draws"]


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def _check_callables(model: Any, guide: Any) -> None:
    if not callable(model):
        raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
    if not callable(guide):
        raise TypeError(f"guide must be a callable Pyro guide, got {type(guide).__name__}")


def _single_traces(model: Callable, guide: Callable, args: tuple, kwargs: dict):
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    return model_trace, guide_trace


def _max_plate_nesting(*traces: Any) -> int:
    dims = [
        -frame.dim
        for trace in traces
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    return max(dims, default=0)


def _is_deterministic(site: dict) -> bool:
    return bool(site["infer"].get("_deterministic", False))


def importance_draws(
    model: Callable, guide: Callable, *args: Any, num_samples: int = 1000,
    chunk_size: int = 1000, **kwargs: Any
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """Draws from ``guide`` with their log importance weights against ``model``.

    Args:
        model, guide: a Pyro model and a guide for it (any guide Pyro can vectorize over
            particles, e.g. every autoguide).
        *args, **kwargs: the model's arguments.
        num_samples: number of draws.
        chunk_size: draws evaluated at once (bounds memory for large data sets).

    Returns:
        ``(log_weights, posterior, observed)``: ``log_weights`` of shape ``(num_samples,)``;
        ``posterior`` maps every latent and ``pyro.deterministic`` site of the model to
        draws of shape ``(num_samples,) + site shape`` in the constrained space;
        ``observed`` maps observed sites to their data.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyro.clear_param_store()
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> lw, post, obs = importance_draws(model, AutoNormal(model), num_samples=10)
        >>> lw.shape, post["z"].shape
        (torch.Size([10]), torch.Size([10]))

    References:
        Yao et al. (2018), "Yes, but Did It Work?: Evaluating Variational Inference".
    """
    _check_callables(model, guide)
    _check_positive_int(num_samples, "num_samples", 2)
    _check_positive_int(chunk_size, "chunk_size")
    model_trace, guide_trace = _single_traces(model, guide, args, kwargs)
    nesting = _max_plate_nesting(model_trace, guide_trace)
    latent = {
        name: site["value"].shape
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample"
        and (not site["is_observed"] or _is_deterministic(site))
        and not site["infer"].get("is_auxiliary", False)
        and not name.startswith("_")
        and name in _sample_names(model_trace)
    }
    observed = {
        name: site["value"].detach()
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and site["is_observed"] and not _is_deterministic(site)
    }
    weights, draws = [], {name: [] for name in latent}
    done = 0
    with torch.no_grad():
        while done < num_samples:
            n = min(chunk_size, num_samples - done)
            lw, vec_model, _ = vectorized_importance_weights(
                model, guide, *args, num_samples=n, max_plate_nesting=nesting,
                normalized=False, **kwargs
            )
            weights.append(lw.reshape(n))
            for name, shape in latent.items():
                value = vec_model.nodes[name]["value"]
                if value.numel() != n * math.prod(shape):
                    raise ValueError(
                        f"site {name!r} has {value.numel()} values for {n} vectorized draws "
                        f"of shape {tuple(shape)}; the model does not vectorize over "
                        "particles (make it broadcast over leading batch dimensions)"
                    )
                draws[name].append(value.reshape((n,) + tuple(shape)))
            done += n
    posterior = {name: torch.cat(parts) for name, parts in draws.items()}
    return torch.cat(weights), posterior, observed


def _sample_names(trace: Any) -> set[str]:
    # Subsample sites of plates are "sample" nodes too; they are not random variables.
    return {
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and type(site["fn"]).__name__ != "_Subsample"
    }


@dataclass(frozen=True)
class DiagnosticReport:
    """The result of :func:`diagnose`.

    Attributes:
        elbo: Monte Carlo ELBO, ``mean(log w)``; ``elbo_se`` its standard error.
        log_z: importance-sampling estimate of the log evidence; ``log_z_se`` its standard
            error (delta method; meaningful only when ``khat`` is below 0.7).
        khat: PSIS Pareto k-hat of the importance weights; ``khat_reading`` in words.
        ess: importance-sampling effective sample size; ``ess_fraction`` as a share of
            ``num_samples``.
    """

    elbo: float
    elbo_se: float
    log_z: float
    log_z_se: float
    khat: float
    ess: float
    ess_fraction: float
    num_samples: int

    @property
    def khat_reading(self) -> str:
        return khat_reading(self.khat)

    @classmethod
    def from_log_weights(cls, log_weights: Tensor) -> DiagnosticReport:
        lw = log_weights.detach().to("cpu", torch.float64)
        s: ImportanceSummary = importance_summary(lw)
        finite = lw[torch.isfinite(lw)]
        elbo = float(finite.mean()) if finite.numel() == lw.numel() else -math.inf
        elbo_se = float(finite.std() / math.sqrt(finite.numel()))
        return cls(elbo, elbo_se, s.log_z, s.log_z_se, s.khat, s.ess, s.ess_fraction,
                   s.num_samples)

    def __str__(self) -> str:
        advice = {
            "good": "the guide is a good fit; importance-sampling estimates are reliable",
            "ok": "usable, but estimates converge slowly; more training or a richer flow helps",
            "unreliable": "the guide misses posterior mass: do not trust these estimates; "
            "train longer, use a richer flow, or run fi.neutra_mcmc",
            "undefined": "k-hat could not be computed",
        }[self.khat_reading]
        if self.khat_reading == "unreliable" and self.ess_fraction >= 0.5:
            # k-hat reads the tail of the weights, ESS their bulk: both high means the guide
            # matches the bulk but has lighter tails than the posterior somewhere (e.g. a
            # Gaussian-tailed guide on an exponentially tailed posterior), so the weights'
            # variance is infinite even though few draws carry large weight.
            advice = (
                "the weights' tail is heavy although the bulk matches (high ESS): the guide's "
                "tails are lighter than the posterior's somewhere, so tail-sensitive estimates "
                "(log Z, extreme quantiles) are unreliable; more draws sharpen k-hat, and "
                "fi.neutra_mcmc gives exact answers"
            )
        return (
            f"ELBO        {self.elbo:.3f} +- {self.elbo_se:.3f}\n"
            f"log Z (IS)  {self.log_z:.3f} +- {self.log_z_se:.3f}\n"
            f"PSIS k-hat  {self.khat:.2f} ({self.khat_reading}: {advice})\n"
            f"IS ESS      {self.ess:.0f} of {self.num_samples} "
            f"({100 * self.ess_fraction:.1f}%)"
        )


def diagnose(model: Callable, guide: Callable, *args: Any, num_samples: int = 2000,
             chunk_size: int = 1000, **kwargs: Any) -> DiagnosticReport:
    """ELBO, log-evidence estimate, PSIS k-hat and ESS of a fitted guide.

    Args:
        model: the Pyro model.
        guide: a fitted guide (``fi.AutoFlow`` or any Pyro autoguide).
        *args, **kwargs: the model's arguments.
        num_samples: draws from the guide (k-hat needs a few hundred to be stable).
        chunk_size: draws evaluated at once.

    Returns:
        A :class:`DiagnosticReport`; ``print(report)`` reads the k-hat for you.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyro.clear_param_store()
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("z", dist.Normal(0.0, 1.0))
        >>> report = diagnose(model, AutoNormal(model), num_samples=500)
        >>> report.num_samples
        500

    References:
        Yao et al. (2018), "Yes, but Did It Work?: Evaluating Variational Inference".
        Vehtari et al. (2024), "Pareto Smoothed Importance Sampling".
    """
    log_weights, _, _ = importance_draws(model, guide, *args, num_samples=num_samples,
                                         chunk_size=chunk_size, **kwargs)
    return DiagnosticReport.from_log_weights(log_weights)


def _to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy()


def to_inference_data(
    model: Callable, guide: Callable, *args: Any, num_samples: int = 2000,
    resample: bool = False, chunk_size: int = 1000, **kwargs: Any
):
    """Guide draws as an ``arviz.InferenceData`` (one chain, constrained space).

    Groups: ``posterior`` (every latent and ``pyro.deterministic`` site, names and shapes
    kept), ``sample_stats`` (``log_importance_weight``, ``log p - log q`` of each draw) and
    ``observed_data``. ``attrs`` hold the ELBO, log-evidence estimate, k-hat and ESS.

    Args:
        model, guide, *args, **kwargs: as in :func:`diagnose`.
        num_samples: draws.
        resample: if True, resample the draws with PSIS-smoothed importance weights
            (sampling importance resampling), which corrects part of the guide's error when
            k-hat is below 0.7; the ``log_importance_weight`` kept is that of each chosen draw.
        chunk_size: draws evaluated at once.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> pyro.clear_param_store()
        >>> from pyro.infer.autoguide import AutoNormal
        >>> def model():
        ...     pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        >>> idata = to_inference_data(model, AutoNormal(model), num_samples=100)
        >>> idata.posterior["z"].shape
        (1, 100, 3)

    References:
        Kumar et al. (2019), "ArviZ a unified library for exploratory analysis of Bayesian
        models in Python". Vehtari et al. (2024), "Pareto Smoothed Importance Sampling".
    """
    import arviz as az

    if not isinstance(resample, bool):
        raise TypeError(f"resample must be a bool, got {type(resample).__name__}")
    log_weights, posterior, observed = importance_draws(
        model, guide, *args, num_samples=num_samples, chunk_size=chunk_size, **kwargs
    )
    report = DiagnosticReport.from_log_weights(log_weights)
    if resample:
        smoothed, _ = az.psislw(_to_numpy(log_weights).astype(np.float64).copy())
        probs = torch.as_tensor(np.exp(smoothed - smoothed.max()))
        # torch's generator, so torch.manual_seed / pyro.set_rng_seed fix the resampling.
        idx = torch.multinomial(probs, num_samples, replacement=True)
        posterior = {k: v[idx.to(v.device)] for k, v in posterior.items()}
        log_weights = log_weights[idx.to(log_weights.device)]
    attrs = {
        "inference_library": "pyro + flowinfer",
        "guide": type(guide).__name__,
        "elbo": report.elbo,
        "elbo_se": report.elbo_se,
        "log_z": report.log_z,
        "log_z_se": report.log_z_se,
        "khat": report.khat,
        "ess": report.ess,
        "resampled": int(resample),
    }
    return az.from_dict(
        posterior={k: _to_numpy(v)[None] for k, v in posterior.items()},
        sample_stats={"log_importance_weight": _to_numpy(log_weights)[None]},
        observed_data={k: _to_numpy(v) for k, v in observed.items()},
        attrs=attrs,
    )


def neutra_mcmc(
    model: Callable, guide: Any, *args: Any, num_samples: int = 1000, warmup: int = 500,
    num_chains: int = 2, progress: bool | None = None, nuts_kwargs: dict | None = None,
    **kwargs: Any
):
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
        >>> from flowinfer.guides import AutoFlow
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
    _check_positive_int(num_samples, "num_samples")
    _check_positive_int(warmup, "warmup", 0)
    _check_positive_int(num_chains, "num_chains")
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
