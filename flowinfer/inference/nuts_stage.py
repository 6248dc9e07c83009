"""Stage 4b of ``fi.infer``: NUTS warm-started by the flow fits, when the checks fail.

For each fit that carries real importance weight, chains start from its draws and run in the
coordinates of a dense Gaussian or of the flow (:mod:`flowinfer.inference.escalation`); the
kernel is chosen from measured importance diagnostics and, when they disagree, pilot chains.
Separated modes do not mix within a chain, so each mode's chains are pooled by its share.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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


def nuts_result(probe: Probe, fits: list[GuideFit], check: CheckResult):
    """NUTS chains for each fit with real weight, combined by the fits' importance shares.

    Chains that miss R-hat or ESS run once more from fresh starts with twice the warm-up
    and twice the draws, thinned by two to the requested number (``attrs["nuts_rounds"]``).
    """
    opts = probe.opts
    idata, info = _nuts_round(probe, fits, check, opts.warmup, 1)
    if not info["checks_passed"] and opts.warmup > 0:
        first = (f"R-hat {info['rhat_max']:.3f}, bulk ESS {info['ess_bulk_min']:.0f}, "
                 f"{info['num_divergences']} divergences after "
                 f"{opts.warmup} warm-up steps")
        time_first = info["nuts_time"]
        idata, info = _nuts_round(probe, fits, check, 2 * opts.warmup, 2)
        info["nuts_time"] += time_first
        info["kernel_reason"] += f"; first round {first}, rerun with twice the warm-up"
        info["nuts_rounds"] = 2
    else:
        info["nuts_rounds"] = 1
    return idata, info


def _nuts_round(probe: Probe, fits: list[GuideFit], check: CheckResult, warmup: int,
                thin: int):
    from flowinfer.inference.escalation import (
        FixedGaussian,
        affine_map,
        choose_kernel,
        guide_map,
        run_chains,
    )

    opts = probe.opts
    k_total = len(fits)
    shares = check.mode_shares or [1.0]
    chains_per = [opts.num_chains] if k_total == 1 else [
        max(2, opts.num_chains // k_total)] * k_total
    potential = probe.guide._potential(probe.args, probe.kwargs)

    def log_density(u: Tensor) -> Tensor:
        return potential.log_prob(u, safe=True)

    w_all = torch.softmax(check.log_weights, 0)
    # Fits whose draws carry almost no weight (a funnel's neck, a fit that failed)
    # get no chains; the others keep their share.
    keep = [k for k in range(k_total) if shares[k] >= _MIN_SHARE] or [
        int(np.argmax(shares))]
    if len(keep) < k_total:
        total = sum(shares[k] for k in keep)
        shares = [shares[k] / total for k in keep]
        chains_per = [opts.num_chains] if len(keep) == 1 else [
            max(2, opts.num_chains // len(keep))] * len(keep)
    runs, kernels, reasons = [], [], []
    for j, k in enumerate(keep):
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
        kernels.append(kernel)
        reasons.append(reason)
        c = chains_per[j]
        frozen = [p.requires_grad for p in f.guide.parameters()]
        f.guide.requires_grad_(False)  # NUTS must not push gradients into the guide
        try:
            if kernel == "dense":
                pick = torch.multinomial(w.double(), c, replacement=True)
                inits = torch.linalg.solve_triangular(
                    tril, (u[pick] - mean).T, upper=False).T
                transform = affine_map(mean, tril)
            else:
                inits = torch.randn(c, probe.dim, dtype=u.dtype)
                transform = guide_map(f.guide, probe.args, probe.kwargs)
            runs.append(run_chains(log_density, transform, inits=inits,
                                   num_draws=opts.draws_per_chain, warmup=warmup,
                                   progress=opts.progress, thin=thin))
        finally:
            for p, g in zip(f.guide.parameters(), frozen, strict=True):
                p.requires_grad_(g)
    return _combine(probe, runs, shares, kernels, reasons)

def _pilot(probe: Probe, log_density: Callable, fit_: GuideFit, u: Tensor, w: Tensor,
           mean: Tensor, tril: Tensor, why: str) -> tuple[str, str]:
    """Measure both kernels on a short chain; the cheaper per iteration wins."""
    from flowinfer.inference.escalation import affine_map, guide_map, pilot

    pick = torch.multinomial(w.double(), 1)
    z_dense = torch.linalg.solve_triangular(tril, (u[pick] - mean).T, upper=False).T[0]
    frozen = [p.requires_grad for p in fit_.guide.parameters()]
    fit_.guide.requires_grad_(False)
    try:
        dense = pilot(log_density, affine_map(mean, tril), z_dense)
        neutra = pilot(log_density, guide_map(fit_.guide, probe.args, probe.kwargs),
                       torch.randn(probe.dim, dtype=u.dtype))
    finally:
        for p, g in zip(fit_.guide.parameters(), frozen, strict=True):
            p.requires_grad_(g)
    # A divergence in the pilot says the kernel cannot follow the geometry at all.
    cost = {name: t * (10.0 if div else 1.0) for name, (t, div) in
            (("dense", dense), ("neutra", neutra))}
    chosen = min(cost, key=cost.get)
    return chosen, (f"{why}; pilot chains: dense {1e3 * dense[0]:.1f} ms/iteration "
                    f"({dense[1]} divergences), neutra {1e3 * neutra[0]:.1f} ms/iteration "
                    f"({neutra[1]} divergences): {chosen} is cheaper")


def _combine(probe: Probe, runs: list, shares: list[float], kernels: list[str],
             reasons: list[str]):
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
    idata = build_inference_data(probe.model, probe.args, probe.kwargs, probe.constrained(u),
                                 num_chains, sample_stats={"diverging": diverging},
                                 predictive=opts.posterior_predictive)
    info = {"kernel": kernels[0] if len(set(kernels)) == 1 else ",".join(kernels),
            "kernel_reason": reasons[0], "rhat_max": rhat, "ess_bulk_min": ess_bulk,
            "ess_tail_min": ess_tail, "num_divergences": divergences,
            "checks_passed": bool(passed and divergences == 0),
            "nuts_time": sum(r.wall_time for r in runs),
            "step_sizes": [s for r in runs for s in r.step_sizes]}
    return idata, info


def _shares_to_counts(shares: list[float], total: int) -> list[int]:
    raw = [s * total for s in shares]
    counts = [int(math.floor(r)) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])[:total - sum(counts)]:
        counts[i] += 1
    return counts
