"""A trained NPE's posterior for one data set as an ``arviz.InferenceData``.

Example:
    >>> import torch, pyro, pyro.distributions as dist, flowinfer as fi
    >>> def box():
    ...     corner = pyro.sample("corner", dist.Uniform(-torch.ones(2), 1.0).to_event(1))
    ...     pyro.sample("obs", dist.Normal(corner, 0.2).to_event(1))
    >>> est = fi.NPE(box, "obs", embedding="mlp", flow_options={"num_layers": 1, "hidden": (8,)})
    >>> _ = est.fit(num_simulations=300, epochs=2, seed=0, progress=False)
    >>> idata = inference_data(est, torch.tensor([0.1, -0.4]), num_samples=50)
    >>> idata.posterior["corner"].shape, list(idata.sample_stats.data_vars)  # chain, draw, site
    ((1, 50, 2), ['log_q'])
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["inference_data"]


def inference_data(npe: Any, x: Any, num_samples: int = 4000) -> Any:
    """``npe``'s posterior draws given ``x`` (one chain): groups ``posterior`` (each latent
    site, its shape kept), ``sample_stats`` (``log_q``, the estimated log density of each
    draw) and ``observed_data``."""
    import arviz as az

    u = npe.sample_unconstrained(num_samples, x)
    draws, _ = npe.info.to_constrained(u)
    with torch.no_grad():
        log_q = npe.log_prob(draws, x)
    observed = npe.info.check_observation(x)
    return az.from_dict(
        posterior={k: v.cpu().numpy()[None] for k, v in draws.items()},
        sample_stats={"log_q": log_q.cpu().numpy()[None]},
        observed_data={k: v.cpu().numpy() for k, v in observed.items()},
        attrs={"inference_library": "pyro + flowinfer", "method": "NPE",
               "num_simulations": 0 if npe.simulations is None else len(npe.simulations)},
    )
