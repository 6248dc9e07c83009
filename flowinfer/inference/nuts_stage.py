"""Stage 4b of ``fi.infer``: NUTS warm-started by the flow fits, when the checks fail.

For each fit that carries real importance weight, chains start from its draws and run in the
coordinates of a dense Gaussian or of the flow (:mod:`flowinfer.inference.escalation`); the
kernel is chosen from measured importance diagnostics and, when they disagree, pilot chains.
Separated modes do not mix within a chain, so each mode's chains are pooled by its share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowinfer.inference.groups import build_inference_data
from flowinfer.inference.sites import init_to_median_or_zero
from flowinfer.inference.stages import CheckResult, GuideFit, Probe, _safe_summary

__all__ = ["nuts_result"]

#: Fits below this share of the importance weight get no NUTS chains.
_MIN_SHARE = 0.05
#: Importance ESS below which NUTS is preconditioned by a fit's unweighted draws.
_MIN_COV_ESS = 100.0


@dataclass
class _Plan:
    """One fit's NUTS set-up: its draws' weighted Gaussian, the kernel and the chains."""

    fit: GuideFit
    u: Tensor
    w: Tensor
    mean: Tensor
    tril: Tensor
    kernel: str
    reason: str
    chains: int


@contextmanager
def _frozen(guide: Any) -> Iterator[None]:
    """NUTS and the pilots must not push gradients into the guide's parameters."""
    flags = [p.requires_grad for p in guide.parameters()]
    guide.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(guide.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def nuts_result(probe: Probe, fits: list[GuideFit], check: CheckResult):
    """NUTS chains for each fit with real weight, combined by the fits' importance shares.

    Chains that miss R-hat or ESS run once more from fresh starts with twice the warm-up
    and twice the draws, thinned by two to the requested number (``attrs["nuts_rounds"]``);
    the kernels chosen for the first round serve the second.
    """
    opts = probe.opts
    potential = probe.guide._potential(probe.args, probe.kwargs)

    def log_density(u: Tensor) -> Tensor:
        return potential.log_prob(u, safe=True)

    plans, shares = _plans(probe, fits, check, log_density)
    runs = _run_plans(probe, plans, log_density, opts.warmup, 1)
    draws, info = _combine(probe, runs, shares)
    info["nuts_rounds"] = 1
    if not info["checks_passed"] and opts.warmup > 0:
        first = (f"R-hat {info['rhat_max']:.3f}, bulk ESS {info['ess_bulk_min']:.0f}, "
                 f"{info['num_divergences']} divergences after {opts.warmup} warm-up steps")
        time_first = info["nuts_time"]
        runs = _run_plans(probe, plans, log_density, 2 * opts.warmup, 2)
        draws, info = _combine(probe, runs, shares)
        info["nuts_time"] += time_first
        info["nuts_rounds"] = 2
    kernels = [plan.kernel for plan in plans]
    info["kernel"] = kernels[0] if len(set(kernels)) == 1 else ",".join(kernels)
    info["kernel_reason"] = plans[0].reason + (
        f"; first round {first}, rerun with twice the warm-up" if info["nuts_rounds"] == 2
        else "")
    u, diverging, num_chains = draws
    idata = build_inference_data(probe.model, probe.args, probe.kwargs, probe.constrained(u),
                                 num_chains, sample_stats={"diverging": diverging},
                                 predictive=opts.posterior_predictive)
    return idata, info


def _plans(probe: Probe, fits: list[GuideFit], check: CheckResult, log_density: Callable
           ) -> tuple[list[_Plan], list[float]]:
    """The fits that get chains, each with its preconditioner and kernel, and their shares."""
    from flowinfer.inference.escalation import FixedGaussian, choose_kernel

    opts = probe.opts
    k_total = len(fits)
    shares = check.mode_shares or [1.0]
    w_all = torch.softmax(check.log_weights, 0)
    # Fits whose draws carry almost no weight (a funnel's neck, a fit that failed)
    # get no chains; the others keep their share.
    keep = [k for k in range(k_total) if shares[k] >= _MIN_SHARE] or [
        int(np.argmax(shares))]
    total = sum(shares[k] for k in keep)
    shares = [shares[k] / total for k in keep]
    chains = opts.num_chains if len(keep) == 1 else max(2, opts.num_chains // len(keep))
    plans = []
    for k in keep:
        f = fits[k]
        mine = check.component == k
        u, w = check.unconstrained[mine], w_all[mine]
        ess = float(w.sum()) ** 2 / float((w ** 2).sum()) if float(w.sum()) > 0 else 0.0
        if ess < _MIN_COV_ESS or not bool(torch.isfinite(w).all()):
            # Too few effective draws for a weighted covariance: the fit's own spread
            # is the steadier preconditioner.
            w = torch.ones(u.shape[0], dtype=w.dtype)
        w = (w / w.sum()).to(u.dtype)
        mean = (w[:, None] * u).sum(0)
        centred = u - mean
        cov = (w[:, None] * centred).T @ centred
        cov = 0.5 * (cov + cov.T) + 1e-10 * torch.eye(probe.dim, dtype=cov.dtype) * (
            1.0 + cov.diagonal().mean())
        tril, bad = torch.linalg.cholesky_ex(cov)
        if int(bad) != 0:
            tril = torch.diag(cov.diagonal().clamp_min(1e-12).sqrt())
        kernel, reason = opts.kernel, "chosen by the caller"
        if kernel == "auto":
            gauss = FixedGaussian(probe.model, mean, tril, init_loc_fn=init_to_median_or_zero)
            with torch.no_grad():
                gauss(*probe.args, **probe.kwargs)
            n = min(opts.check_draws, 2000)
            lw_g, _ = probe.draws(gauss, n)
            g = _safe_summary(torch.nan_to_num(lw_g.double(), nan=-math.inf,
                                               posinf=-math.inf))
            fl = check.component_summaries[k]
            kernel, reason = choose_kernel(fl.khat, g.khat, fl.ess * n / int(mine.sum()),
                                           g.ess)
            if kernel == "neutra":
                kernel, reason = _pilot(probe, log_density, f, u, w, mean, tril, reason)
        plans.append(_Plan(f, u, w, mean, tril, kernel, reason, chains))
    return plans, shares


def _run_plans(probe: Probe, plans: list[_Plan], log_density: Callable, warmup: int,
               thin: int) -> list:
    """One round of chains for every plan."""
    from flowinfer.inference.escalation import affine_map, guide_map, run_chains

    opts = probe.opts
    runs = []
    for plan in plans:
        with _frozen(plan.fit.guide):
            if plan.kernel == "dense":
                pick = torch.multinomial(plan.w.double(), plan.chains, replacement=True)
                inits = torch.linalg.solve_triangular(
                    plan.tril, (plan.u[pick] - plan.mean).T, upper=False).T
                transform = affine_map(plan.mean, plan.tril)
            else:
                inits = torch.randn(plan.chains, probe.dim, dtype=plan.u.dtype)
                transform = guide_map(plan.fit.guide, probe.args, probe.kwargs)
            runs.append(run_chains(log_density, transform, inits=inits,
                                   num_draws=opts.draws_per_chain, warmup=warmup,
                                   progress=opts.progress, thin=thin))
    return runs


def _pilot(probe: Probe, log_density: Callable, fit_: GuideFit, u: Tensor, w: Tensor,
           mean: Tensor, tril: Tensor, why: str) -> tuple[str, str]:
    """Measure both kernels on a short chain; the cheaper per iteration wins."""
    from flowinfer.inference.escalation import affine_map, guide_map, pilot

    pick = torch.multinomial(w.double(), 1)
    z_dense = torch.linalg.solve_triangular(tril, (u[pick] - mean).T, upper=False).T[0]
    with _frozen(fit_.guide):
        dense = pilot(log_density, affine_map(mean, tril), z_dense)
        neutra = pilot(log_density, guide_map(fit_.guide, probe.args, probe.kwargs),
                       torch.randn(probe.dim, dtype=u.dtype))
    # A divergence in the pilot says the kernel cannot follow the geometry at all.
    cost = {name: t * (10.0 if div else 1.0) for name, (t, div) in
            (("dense", dense), ("neutra", neutra))}
    chosen = min(cost, key=cost.get)
    return chosen, (f"{why}; pilot chains: dense {1e3 * dense[0]:.1f} ms/iteration "
                    f"({dense[1]} divergences), neutra {1e3 * neutra[0]:.1f} ms/iteration "
                    f"({neutra[1]} divergences): {chosen} is cheaper")


def _combine(probe: Probe, runs: list, shares: list[float]) -> tuple[tuple, dict]:
    """``(draws, diverging, chains)`` pooled over the runs, and their convergence checks."""
    import arviz as az

    opts = probe.opts
    rhats, bulks, tails = [], [], []
    for run in runs:
        if run.num_chains < 2:
            continue
        samples = probe.constrained(run.unconstrained)
        ds = az.convert_to_dataset({k: v.reshape((run.num_chains, -1) + v.shape[1:])
                                    .cpu().numpy() for k, v in samples.items()})
        rhats.append(float(az.rhat(ds).to_array().max()))
        bulks.append(float(az.ess(ds, method="bulk").to_array().min()))
        tails.append(float(az.ess(ds, method="tail").to_array().min()))
    if len(runs) == 1:
        run = runs[0]
        u, diverging, num_chains = run.unconstrained, run.diverging, run.num_chains
    else:
        # Separated modes do not mix within a chain: each mode's chains are weighted by
        # the mode's importance share and pooled into exchangeable pseudo-chains.
        total = opts.draws_per_chain * opts.num_chains
        counts = _shares_to_counts(shares, total)
        parts, divs = [], []
        for run, c in zip(runs, counts, strict=True):
            n = run.unconstrained.shape[0]
            idx = torch.randint(n, (c,)) if c > n else torch.randperm(n)[:c]
            parts.append(run.unconstrained[idx])
            divs.append(run.diverging[idx])
        order = torch.randperm(total)
        u, diverging = torch.cat(parts)[order], torch.cat(divs)[order]
        num_chains = opts.num_chains
    rhat = max(rhats) if rhats else math.nan
    ess_bulk = (sum(bulks) if len(runs) > 1 else bulks[0]) if bulks else math.nan
    ess_tail = (sum(tails) if len(runs) > 1 else tails[0]) if tails else math.nan
    divergences = sum(r.num_divergences for r in runs)
    passed = rhat < 1.01 and ess_bulk >= opts.min_ess and ess_tail >= opts.min_ess
    info = {"rhat_max": rhat, "ess_bulk_min": ess_bulk,
            "ess_tail_min": ess_tail, "num_divergences": divergences,
            "checks_passed": bool(passed and divergences == 0),
            "nuts_time": sum(r.wall_time for r in runs),
            "step_sizes": [s for r in runs for s in r.step_sizes]}
    return (u, diverging, num_chains), info


def _shares_to_counts(shares: list[float], total: int) -> list[int]:
    raw = [s * total for s in shares]
    counts = [int(math.floor(r)) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])[:total - sum(counts)]:
        counts[i] += 1
    return counts
