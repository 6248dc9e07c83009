"""Held-out negative log posterior density of NPE variants, on fresh simulations.

The expected ``-log q(theta | x)`` over the joint ``p(theta) p(x | theta)`` equals the
expected KL divergence from the true posterior to ``q`` plus a constant that does not depend
on ``q`` (Papamakarios & Murray 2016), so differences between variants on the same held-out
pairs measure, on average over the whole prior predictive, how much closer one amortized
posterior is to the truth. Unlike C2ST against reference draws it needs no reference
posterior and no chosen observations, so it can judge defaults on models of any kind; it
costs one forward pass.

For each model and budget, every variant trains on the same simulations (seed) and is scored
on the same 20,000 fresh pairs, by the density of the unconstrained latents (the flow's
density plus the Jacobian of the standardisation, so variants that standardise differently
compare; before the eighth session the scores were in the z-scored space, a constant per
model away). The report gives each variant's mean and the paired standard error of its
difference to the first variant.

    python benchmarks/npe_heldout.py --budgets 1000 --variants '{}' '{"embedding": "identity"}'

Models: the four sbibm tasks of ``benchmarks/sbi.py`` and models written here that are in no
benchmark: the conjugate Gaussian of ``tests/npe`` (trials), a bounded one (uniform,
half-normal, simplex latents, narrow likelihood), an AR(1) series of 40 steps and a linear
regression on 50 design points (high-dimensional data), a hierarchical model in plates
whose group effects are nuisances (40-d data, two latents inferred); and the five sbibm
tasks of ``sbibm_extra.py`` (gaussian_linear, gaussian_mixture, bernoulli_glm and its raw
100-spike version, slcp with 92 heavy-tailed uninformative columns beside its data).

References:
    Papamakarios & Murray (2016), "Fast epsilon-free inference of simulation models with
    Bayesian conditional density estimation", NeurIPS.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "npe"))

from npe_models import bounded_model, gaussian_model  # noqa: E402
from sbi import TASKS  # noqa: E402
from sbibm_extra import TASKS as EXTRA_TASKS  # noqa: E402

import flowinfer as fi  # noqa: E402
from flowinfer.npe.options import tuples  # noqa: E402
from flowinfer.npe.training import training_tensors  # noqa: E402


def ar1(steps: int = 40):
    """AR(1) series from x_0 = 0: phi ~ U(-1, 1), noise sd ~ HalfNormal(1),
    x_t = phi x_{t-1} + sd e_t, written as its Gaussian: x = L e, L_ts = sd phi^(t-s)."""
    phi = pyro.sample("phi", dist.Uniform(-1.0, 1.0))
    sd = pyro.sample("sd", dist.HalfNormal(1.0))
    t = torch.arange(steps)
    lag = (t[:, None] - t[None, :]).clamp_min(0).to(phi.dtype)
    tril = torch.tril(phi[..., None, None] ** lag) * sd[..., None, None]
    pyro.sample("x", dist.MultivariateNormal(torch.zeros(steps), scale_tril=tril))


_DESIGN = torch.linspace(-2.0, 2.0, 50)


def regression():
    """y = b0 + b1 t + b2 t^2 + noise on 50 points, noise sd ~ LogNormal(-1, 0.5)."""
    beta = pyro.sample("beta", dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1))
    sd = pyro.sample("sd", dist.LogNormal(-1.0, 0.5))
    basis = torch.stack([torch.ones(50), _DESIGN, _DESIGN**2])
    mean = beta @ basis
    pyro.sample("y", dist.Normal(mean, sd[..., None]).to_event(1))


def hierarchical(groups: int = 8, per_group: int = 5):
    """Group effects eta_g ~ N(mu, tau) in a plate, y_gn ~ N(eta_g, 0.5): mu ~ N(0, 2) and
    tau ~ HalfNormal(1) are inferred, the eight effects are nuisances (marginalised)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    tau = pyro.sample("tau", dist.HalfNormal(1.0))
    with pyro.plate("groups", groups):
        eta = pyro.sample("eta", dist.Normal(mu, tau))
        with pyro.plate("trials", per_group):
            pyro.sample("y", dist.Normal(eta, 0.5))


#: name: (model, observed site(s), latent sites to infer or None for all)
MODELS = {
    **{name: (model, "x", None) for name, (model, _) in TASKS.items()},
    "conjugate_gaussian": (gaussian_model, "x", None),
    "bounded": (bounded_model, "x", None),
    "ar1": (ar1, "x", None),
    "regression": (regression, "y", None),
    "hierarchical": (hierarchical, "y", ["mu", "tau"]),
    **{name: (model, observed, None) for name, (model, observed) in EXTRA_TASKS.items()},
}


def heldout_nll(npe, sims) -> torch.Tensor:
    """``-log q(u | x)`` per held-out pair, in the unconstrained space (the flow's density
    with the Jacobian of the standardisation, so variants that scale the latents
    differently, e.g. ``standardize``, are compared on one scale)."""
    z, x = training_tensors(npe, sims)
    with torch.no_grad():
        return torch.cat([-(npe.flow.log_prob(zb, npe.embedding(xb)) + npe.scaling.log_abs_det())
                          for zb, xb in zip(z.split(5000), x.split(5000), strict=True)])


def capped(nll: torch.Tensor) -> torch.Tensor:
    """Non-finite scores (a pair the estimator gives zero density) count as 1000 nats."""
    return torch.where(torch.isfinite(nll), nll, torch.full_like(nll, 1e3))


def paired(nll: torch.Tensor, base: torch.Tensor) -> dict[str, float]:
    """Mean score, and the mean and standard error of its paired difference to ``base``."""
    diff = nll - base
    return {"nll": float(nll.mean()), "diff": float(diff.mean()),
            "diff_se": float(diff.std() / len(diff) ** 0.5)}


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options this script shares with ``npe_mixture.py``."""
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[1000])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--test-size", type=int, default=20_000)
    parser.add_argument("--out", default=None, help="append rows to this JSONL file")


def test_pairs(name: str, seed: int, test_size: int):
    """The held-out pairs of model ``name`` for ``seed`` (the same for every variant)."""
    model, observed, latents = MODELS[name]
    return fi.simulate(model, observed, test_size, seed=10_000 + seed, progress=False,
                       latent_names=latents)


def fit_and_score(name: str, budget: int, seed: int, test, npe_kw: dict | None = None,
                  fit_kw: dict | None = None):
    """An NPE of model ``name`` trained on ``budget`` simulations (``seed``), its capped
    held-out scores on ``test`` and its training seconds."""
    model, observed, latents = MODELS[name]
    torch.manual_seed(seed)
    npe = fi.NPE(model, observed=observed, latents=latents, constant_data="keep",
                 **(npe_kw or {}))
    start = time.perf_counter()
    npe.fit(num_simulations=budget, seed=seed, progress=False, **(fit_kw or {}))
    seconds = time.perf_counter() - start
    return npe, capped(heldout_nll(npe, test)), seconds


def run(name: str, budget: int, variants: list[dict], seed: int, test_size: int) -> list[dict]:
    test = test_pairs(name, seed, test_size)
    rows, base = [], None
    for variant in variants:
        npe_kw = {k: v for k, v in variant.items() if k in NPE_OPTIONS}
        fit_kw = {k: v for k, v in variant.items() if k not in npe_kw}
        npe, nll, seconds = fit_and_score(name, budget, seed, test, npe_kw, fit_kw)
        base = nll if base is None else base
        row = {"model": name, "budget": budget, "seed": seed, "variant": variant,
               **paired(nll, base),
               "epochs": len(npe.results[-1].history["train_loss"]), "seconds": seconds,
               "chosen": (npe.selection or {}).get("chosen")}
        rows.append(row)
        print(f"{name} {budget} seed {seed} {json.dumps(variant)}: nll {row['nll']:.3f} "
              f"diff {row['diff']:+.3f} +- {row['diff_se']:.3f}  ({row['epochs']} epochs, "
              f"{seconds:.0f} s){' ' + row['chosen'] if row['chosen'] else ''}", flush=True)
    return rows


#: A variant's keys that are ``fi.NPE`` arguments (the others go to ``fit``).
NPE_OPTIONS = set(inspect.signature(fi.NPE.__init__).parameters) - {"self", "model", "observed"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    parser.add_argument("--variants", nargs="+", default=["{}"],
                        help="JSON NPE/fit options per variant; the first is the baseline")
    args = parser.parse_args()
    torch.set_num_threads(1)
    variants = []
    for text in args.variants:
        v = json.loads(text)
        for key in ("flow_options", "embedding_options"):
            if key in v:
                v[key] = tuples(v[key])
        variants.append(v)
    for name in args.models:
        for budget in args.budgets:
            for seed in args.seeds:
                rows = run(name, budget, variants, seed, args.test_size)
                if args.out:
                    with open(args.out, "a") as f:
                        f.writelines(json.dumps(r, default=list) + "\n" for r in rows)


if __name__ == "__main__":
    main()
