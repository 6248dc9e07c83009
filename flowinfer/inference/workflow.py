"""``fi.infer``: a posterior from one call, with the checks that say whether to trust it.

Stages (each timed; see :func:`infer`): multi-start mode search, flow VI per mode, importance
checks on the (mixture) guide, and, when the checks fail, NUTS warm-started by the guide.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyro
from torch import Tensor

if TYPE_CHECKING:
    from arviz import InferenceData

from flowinfer.checks import check_bool, check_choice, check_int, check_number
from flowinfer.inference import stages
from flowinfer.inference.nuts_stage import nuts_result
from flowinfer.inference.report import format_report
from flowinfer.inference.vi_stage import vi_result

__all__ = ["infer", "ROUTES", "REPARAMS"]

ROUTES = ("auto", "vi", "nuts")
REPARAMS = ("auto", "none", "noncentered")
#: Pooled fits whose importance share is below this are dropped before the final checks.
_NEGLIGIBLE = 0.01


def infer(
    model: Callable,
    *args: Any,
    num_draws: int = 1000,
    num_chains: int = 4,
    route: str = "auto",
    reparam: str = "auto",
    flow: str = "iaf",
    flow_options: dict | None = None,
    num_starts: int = 12,
    max_modes: int = 4,
    max_vi_steps: int = 3000,
    num_particles: int = 8,
    lr: float = 5e-3,
    check_draws: int = 4000,
    khat_threshold: float = 0.7,
    min_ess: int = 400,
    warmup: int = 200,
    kernel: str = "auto",
    posterior_predictive: bool = False,
    seed: int | None = None,
    progress: bool | None = None,
    report: bool | None = None,
    **kwargs: Any,
) -> InferenceData:
    """Posterior draws of a Pyro model with continuous latents, checked, as ``InferenceData``.

    1. **Modes.** L-BFGS on the unconstrained log joint from ``num_starts`` starts (the
       prior median, prior draws and their mirror images through the median, uniform draws
       on ``[-2, 2]``); a model that raises or returns NaN at a point only makes that point
       ``-inf``. Separated modes are kept. When some start finds no mode (an unbounded
       density: the funnel of a latent whose scale is another latent), the search is run
       again on the non-centred model (``reparam="auto"``,
       :mod:`flowinfer.inference.reparam`), which is kept if more of its starts converge.
    2. **Flow VI.** One ``AutoFlow`` per mode (Laplace warm start there), trained by
       ``flowinfer.train.fit`` until the smoothed ELBO stops improving (at most
       ``max_vi_steps``), recovering from non-finite steps. Several guides form a mixture
       (the balance heuristic of their draws), so each mode gets its share by importance
       weight.
    3. **Checks.** ``check_draws`` importance draws: PSIS k-hat below ``khat_threshold``,
       importance ESS at least ``min_ess``, and every mode found in stage 1 covered (its
       importance weight no larger than the draws' largest: a guide that misses a mode
       gives it a huge weight, which k-hat on the guide's own draws cannot see). If they
       pass, the result is ``num_draws`` PSIS-resampled draws (route ``"vi"``).
    4. **MCMC.** Otherwise NUTS, ``num_chains`` chains started from guide draws, in the
       coordinates of a Gaussian with the guide's covariance (``"dense"``: a dense mass
       matrix, cheap steps) or of the flow (``"neutra"``) - chosen by comparing the two as
       importance proposals (``kernel="auto"``). R-hat, bulk/tail ESS and divergences are
       checked and reported (route ``"nuts"``); chains that miss them run once more with
       twice the warm-up and twice the draws, thinned by two.

    Args:
        model: a Pyro model with continuous latent sites.
        *args, **kwargs: the model's arguments (as for ``MCMC.run``); the option names below
            are keyword-only and reserved.
        num_draws: draws returned (split over ``num_chains`` chains; rounded up to a
            multiple).
        num_chains: chains of the result (and of NUTS).
        route: ``"auto"`` (VI if the checks pass, else NUTS), ``"vi"`` (never escalate; the
            checks are still reported) or ``"nuts"`` (always escalate).
        reparam: ``"auto"`` (non-centre the funnel sites when that gives the density proper
            modes), ``"none"`` or ``"noncentered"`` (always, where a site's scale depends on
            another latent). A non-centred site keeps its name in ``posterior`` (computed
            from the new latent ``<site>_decentered``, which is reported too).
        flow: the guides' flow (a registered name, see ``fi.available_flows()``).
        flow_options: the flow's hyper-parameters (e.g. ``{"num_layers": 3}``).
        num_starts: starting points of the mode search.
        max_modes: separated modes represented at most.
        max_vi_steps: the VI step budget per guide (plateau stopping usually ends sooner).
        num_particles: ELBO draws per step.
        lr: Adam's learning rate (the guide learns in Laplace-whitened units).
        check_draws: importance draws for the checks (k-hat is noisy below a few thousand).
        khat_threshold: PSIS k-hat below which VI draws are accepted.
        min_ess: importance ESS (VI) or bulk/tail ESS (NUTS) required.
        warmup: NUTS warm-up steps per chain.
        kernel: ``"auto"``, ``"dense"`` or ``"neutra"`` for the NUTS stage.
        posterior_predictive: add a ``posterior_predictive`` group.
        seed: seeds torch/Pyro (``None``: leave the generators alone).
        progress: progress bars (default: when stderr is a terminal).
        report: print the one-screen report (default: in an interactive session).

    Returns:
        ``arviz.InferenceData`` with ``posterior`` (chains x draws x site shape, constrained,
        latent and deterministic sites), ``sample_stats``, ``log_likelihood`` (per observed
        site and data point), ``observed_data``, ``posterior_predictive`` on request, and
        ``attrs``: ``route``, ``checks_passed``, ``khat``, ``ess``, ``num_modes``,
        ``fit_shares``, ``rhat_max``, ``ess_bulk_min``, ``ess_tail_min``, ``num_divergences``,
        ``kernel``, ``nuts_rounds``, ``reparam`` (what was non-centred and why), ``timings``
        (seconds per stage, JSON) and ``report`` (the printed text).

    Raises:
        ValueError: discrete latent sites (with what to do instead), bad option values.
        TypeError: options of the wrong type.

    Example:
        >>> import torch, pyro.distributions as dist
        >>> def model(y):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        ...     pyro.sample("y", dist.Normal(mu, 1.0).expand([len(y)]).to_event(1), obs=y)
        >>> idata = infer(model, torch.tensor([0.5, 1.5]), num_draws=200, seed=0,
        ...               progress=False, report=False, flow_options={"num_layers": 1})
        >>> idata.attrs["route"], idata.posterior["mu"].shape
        ('vi', (4, 50))

    References:
        Yao et al. (2018), "Yes, but Did It Work?: Evaluating Variational Inference".
        Vehtari et al. (2024), "Pareto Smoothed Importance Sampling". Hoffman et al. (2019),
        "NeuTra-lizing Bad Geometry in Hamiltonian Monte Carlo Using Neural Transport".
        Vehtari et al. (2021), "Rank-Normalization, Folding, and Localization: An Improved
        R-hat for Assessing Convergence of MCMC".
    """
    if not callable(model):
        raise TypeError(f"model must be a callable Pyro model, got {type(model).__name__}")
    opts = stages.Options(
        num_draws=check_int(num_draws, "num_draws", 2),
        num_chains=check_int(num_chains, "num_chains", 1),
        route=check_choice(route, "route", ROUTES),
        reparam=check_choice(reparam, "reparam", REPARAMS),
        flow=flow, flow_options=_check_dict(flow_options, "flow_options"),
        num_starts=check_int(num_starts, "num_starts", 1),
        max_modes=check_int(max_modes, "max_modes", 1),
        max_vi_steps=check_int(max_vi_steps, "max_vi_steps", 1),
        num_particles=check_int(num_particles, "num_particles", 1),
        lr=_positive(lr, "lr"),
        check_draws=check_int(check_draws, "check_draws", 10),
        khat_threshold=_positive(khat_threshold, "khat_threshold"),
        min_ess=check_int(min_ess, "min_ess", 1),
        warmup=check_int(warmup, "warmup", 0),
        kernel=check_choice(kernel, "kernel", ("auto", "dense", "neutra")),
        posterior_predictive=check_bool(posterior_predictive, "posterior_predictive"),
        progress=sys.stderr.isatty() if progress is None else check_bool(progress, "progress"),
    )
    if not (isinstance(flow, str) or callable(flow)):
        raise TypeError(f"flow must be a registered flow name or a callable, got "
                        f"{type(flow).__name__}")
    if isinstance(flow, str):
        from flowinfer.registry import get_flow_spec

        get_flow_spec(flow)
    if seed is not None:
        pyro.set_rng_seed(check_int(seed, "seed", 0))
    show_report = _interactive() if report is None else check_bool(report, "report")
    stages.check_model(model, args, kwargs)
    # The guides' parameters live in a private param store: nothing of the caller's is read
    # or overwritten, and nothing is left behind.
    with pyro.get_param_store().scope():
        result = _run(model, args, kwargs, opts)
    idata = result.pop("idata")
    text = format_report(result)
    result["report"] = text
    for key, value in result.items():
        idata.attrs[key] = _attr(value)
    if show_report:
        print(text)
    return idata


def _run(model: Callable, args: tuple, kwargs: dict, opts: stages.Options) -> dict:
    timings: dict[str, float] = {}
    info: dict[str, Any] = {"timings": timings}

    t = time.perf_counter()
    probe = stages.Probe(model, args, kwargs, opts)
    # reparam="noncentered" searches the rewritten model only.
    search = probe.search_modes() if opts.reparam != "noncentered" else None
    alt = _Alternative(probe)
    probe, search, info["reparam"] = _choose_parameterisation(probe, search, alt, opts)
    timings["modes"] = time.perf_counter() - t
    info["mode_search"] = _describe(search)

    fits, check = _fit_and_check(probe, search, info, timings)
    if (not check.passed and opts.reparam == "auto" and info["reparam"].startswith("none")
            and alt.probe is not None):
        # A funnel with a proper mode (its neck, e.g. Neal's funnel at x = 0) passes the
        # mode search, and the centred fit then fails its checks: try the non-centred form.
        alt_probe, names = alt.probe, alt.names
        t = time.perf_counter()
        alt_search = alt.search_modes()
        timings["modes"] += time.perf_counter() - t
        alt_info: dict[str, Any] = {}
        alt_fits, alt_check = _fit_and_check(alt_probe, alt_search, alt_info, timings)
        verdict = (f"the centred fit failed its checks (k-hat {check.khat:.2f}, ESS "
                   f"{check.ess:.0f}); non-centred: k-hat {alt_check.khat:.2f}, ESS "
                   f"{alt_check.ess:.0f}")
        if alt_check.passed or alt_check.khat < check.khat:
            probe, search, fits, check = alt_probe, alt_search, alt_fits, alt_check
            info.update(alt_info, reparam=f"non-centred {names} ({verdict})")
            info["mode_search"] = _describe(search)
        else:
            info["reparam"] = f"none ({verdict})"

    if not check.passed:
        info["first_check"] = (f"k-hat {check.khat:.2f}, importance ESS {check.ess:.0f}"
                               + (f", missed: {'; '.join(check.missed_mass)}"
                                  if check.missed_mass else ""))
        # Several independent fits are the check that can see mass one fit misses: a
        # broad fit pooled with the mode fits, weighted by importance.
        t = time.perf_counter()
        fits.append(probe.fit_broad())
        info["vi"].append(fits[-1].summary)
        timings["vi"] += time.perf_counter() - t
        t = time.perf_counter()
        check = probe.check(fits, search, second_look=True)
        if len(check.mode_shares) > 1 and min(check.mode_shares) < _NEGLIGIBLE:
            # A fit whose draws carry (almost) no weight only dilutes the pooled draws.
            fits = [f for f, share in zip(fits, check.mode_shares, strict=True)
                    if share >= _NEGLIGIBLE]
            check = probe.check(fits, search, second_look=True)
        timings["checks"] += time.perf_counter() - t
        _record_check(info, check)

    info["num_modes"] = len(search.modes)
    escalate = opts.route == "nuts" or (opts.route == "auto" and not check.passed)
    if not escalate:
        t = time.perf_counter()
        idata = vi_result(probe, check)
        timings["output"] = time.perf_counter() - t
        info.update(route="vi", checks_passed=check.passed)
    else:
        t = time.perf_counter()
        idata, mcmc_info = nuts_result(probe, fits, check)
        timings["mcmc"] = time.perf_counter() - t
        info.update(mcmc_info)
        info["route"] = "nuts"
    timings["total"] = sum(timings.values())
    info["idata"] = idata
    return info


def _describe(search: Any) -> str:
    return (f"{search.num_converged} of {search.num_starts} starts converged, "
            f"{len(search.all_modes)} distinct mode(s), {len(search.modes)} kept")


def _fit_and_check(probe: stages.Probe, search: Any, info: dict, timings: dict
                   ) -> tuple[list, Any]:
    """Stage 2 and the first stage-3 check (times added to ``timings``)."""
    t = time.perf_counter()
    fits = probe.fit_guides(search)
    timings["vi"] = timings.get("vi", 0.0) + time.perf_counter() - t
    info["vi"] = [f.summary for f in fits]
    t = time.perf_counter()
    check = probe.check(fits, search)
    timings["checks"] = timings.get("checks", 0.0) + time.perf_counter() - t
    _record_check(info, check)
    return fits, check


def _record_check(info: dict, check: Any) -> None:
    info.update(khat=check.khat, ess=check.ess, missed_mass=check.missed_mass,
                vi_checks_passed=check.passed, fit_shares=check.mode_shares)


class _Alternative:
    """The non-centred form of a probe's model, built and searched at most once.

    ``probe`` is ``None`` when no latent scale depends on another latent, or when the
    model does not take the rewrite.
    """

    def __init__(self, centred: stages.Probe) -> None:
        self._centred = centred
        self._built = False
        self._probe: stages.Probe | None = None
        self._search: Any = None
        self.names = ""

    @property
    def probe(self) -> stages.Probe | None:
        if not self._built:
            self._built = True
            self._probe = self._build()
        return self._probe

    def search_modes(self) -> Any:
        if self._search is None:
            self._search = self.probe.search_modes()
        return self._search

    def _build(self) -> stages.Probe | None:
        from flowinfer.inference.reparam import funnel_sites, noncentered

        centred = self._centred
        values = {name: site["value"] for name, site in centred.sites}
        sites = funnel_sites(centred.model, values, centred.args, centred.kwargs)
        if not sites:
            return None
        self.names = ", ".join(sites)
        try:
            return stages.Probe(noncentered(centred.model, sites), centred.args,
                                centred.kwargs, centred.opts)
        except Exception as err:  # noqa: BLE001 - a rewrite the model does not take
            warnings.warn(f"fi.infer: the non-centred form of {self.names} failed "
                          f"({type(err).__name__}: {err}); the model is used as written",
                          stacklevel=4)
            return None


def _choose_parameterisation(probe: stages.Probe, search: Any | None, alt: _Alternative,
                             opts: stages.Options) -> tuple[stages.Probe, Any, str]:
    """The centred model, or its non-centred form when that gives the density proper modes."""
    if opts.reparam == "none":
        return probe, search, "none (reparam='none')"
    if opts.reparam == "auto" and not search.unbounded:
        return probe, search, "none (every start found a mode)"
    if alt.probe is None:
        search = probe.search_modes() if search is None else search
        return probe, search, "none (no latent scale depends on another latent)"
    alt_probe, names = alt.probe, alt.names
    alt_search = alt.search_modes()
    if search is None:
        return alt_probe, alt_search, f"non-centred {names} (reparam='noncentered')"
    counts = (f"{search.num_converged} of {search.num_starts} starts found a mode centred, "
              f"{alt_search.num_converged} of {alt_search.num_starts} non-centred")
    if alt_search.num_converged > search.num_converged:
        return alt_probe, alt_search, f"non-centred {names} ({counts})"
    return probe, search, f"none ({counts})"


def _interactive() -> bool:
    """A Python prompt, ``python -i``, or an IPython/Jupyter session."""
    if hasattr(sys, "ps1") or bool(sys.flags.interactive):
        return True
    ipython = sys.modules.get("IPython")
    return ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None


def _check_dict(value: Any, name: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict or None, got {type(value).__name__}")
    return dict(value)


def _positive(value: Any, name: str) -> float:
    value = check_number(value, name)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _attr(value: Any) -> Any:
    from flowinfer.inference.groups import _attr as attr

    if isinstance(value, Tensor | np.ndarray):
        value = value.tolist()
    return attr(value)
