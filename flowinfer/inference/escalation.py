"""NUTS warm-started by a fitted guide: dense (Gaussian) or flow (NeuTra) preconditioning.

Both kernels run Pyro's NUTS (on a ``potential_fn``) in the coordinates ``z`` of a map
``u = T(z)`` of the model's unconstrained latent vector ``u``:

* ``"dense"``: ``T`` is the affine map of a Gaussian with the guide's (importance-weighted)
  mean and covariance, which is NUTS with that covariance as a dense mass matrix (Pyro then
  adapts a diagonal one on top). Each leapfrog step costs one model gradient, as in plain
  NUTS.
* ``"neutra"``: ``T`` is the flow guide itself (Hoffman et al. 2019). It removes geometry a
  Gaussian cannot (a funnel's varying scale), but every leapfrog step runs the flow.

:func:`choose_kernel` picks between them from measured importance diagnostics of the two
proposals on the same model; chains start from guide draws, one chain after another.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoContinuous
from torch import Tensor

__all__ = ["FixedGaussian", "choose_kernel", "pilot", "run_chains", "ChainResult", "affine_map",
           "guide_map"]


class FixedGaussian(AutoContinuous):
    """A Gaussian guide with fixed ``loc`` and ``scale_tril`` over a model's latent vector.

    No parameters (so nothing is written to Pyro's param store); ``NeuTraReparam`` turns it
    into dense-mass-matrix NUTS.
    """

    def __init__(self, model: Callable, loc: Tensor, scale_tril: Tensor, init_loc_fn:
                 Callable | None = None) -> None:
        from flowinfer.inference.sites import init_to_median_or_zero

        super().__init__(model, init_loc_fn=init_loc_fn or init_to_median_or_zero)
        self._fixed = (loc.detach().clone(), scale_tril.detach().clone())

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        loc, tril = self._fixed
        if loc.numel() != self.latent_dim:
            raise ValueError(f"loc has {loc.numel()} entries for {self.latent_dim} latents")
        self.register_buffer("fixed_loc", loc)
        self.register_buffer("fixed_scale_tril", tril)

    def get_base_dist(self) -> dist.Distribution:
        zero = torch.zeros_like(self.fixed_loc)
        return dist.Normal(zero, torch.ones_like(zero)).to_event(1)

    def get_transform(self, *args: Any, **kwargs: Any) -> torch.distributions.Transform:
        return dist.transforms.LowerCholeskyAffine(self.fixed_loc, self.fixed_scale_tril)

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.Distribution:
        return dist.MultivariateNormal(self.fixed_loc, scale_tril=self.fixed_scale_tril)

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        return self.fixed_loc, self.fixed_scale_tril.pow(2).sum(-1).sqrt()


def choose_kernel(flow_khat: float, gauss_khat: float, flow_ess: float, gauss_ess: float
                  ) -> tuple[str, str]:
    """``("dense" | "neutra", reason)`` from the two proposals' measured k-hat and ESS.

    The dense kernel costs one model gradient per leapfrog step, NeuTra one gradient
    through the flow as well; the flow's geometry pays only when the Gaussian is a clearly
    worse proposal (its k-hat unreliable and 0.2 above the flow's, or a tenth of the flow's
    importance ESS).

    Example:
        >>> choose_kernel(0.4, 0.5, 900.0, 800.0)[0]
        'dense'
        >>> choose_kernel(0.5, 1.2, 900.0, 20.0)[0]
        'neutra'
    """
    nan_g = math.isnan(gauss_khat)
    worse_tail = nan_g or (gauss_khat >= 0.7 and gauss_khat > flow_khat + 0.2)
    worse_bulk = gauss_ess < 0.1 * flow_ess
    if worse_tail or worse_bulk:
        return "neutra", (f"the Gaussian proposal is clearly worse (k-hat {gauss_khat:.2f} vs "
                          f"{flow_khat:.2f}, ESS {gauss_ess:.0f} vs {flow_ess:.0f}): the "
                          "geometry needs the flow")
    return "dense", (f"the Gaussian proposal is about as good (k-hat {gauss_khat:.2f} vs "
                     f"{flow_khat:.2f}, ESS {gauss_ess:.0f} vs {flow_ess:.0f}): dense mass "
                     "matrix, one model gradient per step")


@dataclass
class ChainResult:
    """Draws of the chains (chain after chain) and NUTS statistics."""

    unconstrained: Tensor               # (chains * draws, latent_dim)
    diverging: Tensor                   # (chains * draws,) bool
    num_divergences: int
    num_chains: int
    wall_time: float
    step_sizes: list[float]


Transform = Callable[[Tensor], tuple[Tensor, Tensor]]


def affine_map(loc: Tensor, scale_tril: Tensor) -> Transform:
    """``z -> (loc + L z, log|det L|)``: NUTS in these coordinates is NUTS with the dense
    mass matrix ``(L L^T)^-1``."""
    log_det = scale_tril.diagonal().log().sum()

    def transform(z: Tensor) -> tuple[Tensor, Tensor]:
        return loc + scale_tril @ z, log_det

    return transform


def guide_map(guide: AutoContinuous, args: tuple, kwargs: dict) -> Transform:
    """``z -> (T(z), log|det dT/dz|)`` for the guide's base-to-latent map (NeuTra)."""

    def transform(z: Tensor) -> tuple[Tensor, Tensor]:
        t = guide.get_transform(*args, **kwargs)
        u = t(z)
        return u, t.log_abs_det_jacobian(z, u).sum()

    return transform


def pilot(log_density: Callable[[Tensor], Tensor], transform: Transform, init: Tensor, *,
          warmup: int = 60, draws: int = 30) -> tuple[float, int]:
    """Seconds per NUTS iteration after a short step-size adaptation, and divergences.

    At the same target acceptance rate, NUTS draws are about equally informative per
    iteration on a well-conditioned target, so the time per iteration (tree size times the
    cost of one gradient, which includes the flow for NeuTra) is what a kernel costs.
    """
    run = run_chains(log_density, transform, inits=init[None], num_draws=draws,
                     warmup=warmup, progress=False, _time_sampling=True)
    return run.wall_time / draws, run.num_divergences


def run_chains(log_density: Callable[[Tensor], Tensor], transform: Transform, *,
               inits: Tensor, num_draws: int, warmup: int, progress: bool,
               nuts_kwargs: dict | None = None, thin: int = 1,
               _time_sampling: bool = False) -> ChainResult:
    """NUTS on ``z`` with density ``p(T(z)) |det dT/dz|``, one chain per row of ``inits``.

    Pyro's NUTS runs on a ``potential_fn``: one evaluation of the model's log density (and
    of ``T``) per leapfrog step, like plain NUTS on the model. Points where the model
    raises or is NaN have zero density (NUTS treats them as divergent).

    Args:
        log_density: the model's log density on the unconstrained latent vector (safe).
        transform: ``z -> (u, log|det du/dz|)``.
        inits: ``(chains, latent_dim)`` starting points in ``z``.
        num_draws, warmup: per chain (``num_draws`` kept after thinning).
        thin: keep every ``thin``-th of ``thin * num_draws`` draws.

    Returns:
        The draws mapped to the latent vector ``u`` (not ``z``), chain after chain.
    """
    from pyro.infer import MCMC, NUTS

    start = time.perf_counter()

    def potential(params: dict) -> Tensor:
        u, log_det = transform(params["z"])
        value = -(log_density(u) + log_det)
        # NaN energies would stop Pyro's tree building; +inf makes a clean divergence.
        return torch.where(torch.isnan(value), value.new_full((), math.inf), value)

    chains, diverging, step_sizes = [], [], []
    num_divergent = 0
    stamps: list[float] = []

    def hook(kernel: Any, samples: Any, stage: str, i: int) -> None:
        if stage == "Sample" and not stamps:
            stamps.append(time.perf_counter())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*requires_grad=False")
        for init in inits:
            kernel = NUTS(potential_fn=potential, **(nuts_kwargs or {}))
            mcmc = MCMC(kernel, num_samples=thin * num_draws, warmup_steps=warmup,
                        initial_params={"z": init.detach().clone()},
                        disable_progbar=not progress, hook_fn=hook if _time_sampling else None)
            mcmc.run()
            if _time_sampling:
                start = stamps[0] if stamps else start
            flags = torch.zeros(thin * num_draws, dtype=torch.bool)
            for steps in mcmc.diagnostics().get("divergences", {}).values():
                flags[torch.as_tensor(steps, dtype=torch.long)] = True
            # A thinned-out divergence still marks the kept draw that follows it.
            diverging.append(flags.reshape(num_draws, thin).any(-1))
            num_divergent += int(flags.sum())
            step_sizes.append(float(kernel.step_size))
            z = mcmc.get_samples()["z"][thin - 1::thin]
            with torch.no_grad():
                chains.append(torch.stack([transform(row)[0] for row in z]))
    div = torch.cat(diverging)
    return ChainResult(torch.cat(chains), div, num_divergent, len(inits),
                       time.perf_counter() - start, step_sizes)
