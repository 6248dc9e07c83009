"""fi.infer against Pyro's plain NUTS on posteriordb posteriors and hard geometries.

For every model: wall time of both, the largest |mean - reference mean| / reference sd and
the largest |log(sd / reference sd)| over all coordinates, the route fi.infer took, its
k-hat, R-hat and ESS; for the two-mode model each mode's share of the draws.

References: the posteriordb models use the Stan reference draws in ``../shared/data``
(skipped without them); ``funnel``, ``bimodal`` and ``collinear`` have exact references
(independent exact draws); ``eight_schools_centered`` is the same posterior as the
posteriordb ``eight_schools_noncentered`` and uses its reference draws.

Usage (one model per process keeps the 2-core machine usable)::

    OMP_NUM_THREADS=1 python benchmarks/infer.py --models funnel --out out/infer_bench
    python benchmarks/infer.py --table out/infer_bench   # markdown table + figure
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import posteriordb_models as pdb  # noqa: E402

import flowinfer as fi  # noqa: E402

EXTRA = ("funnel", "eight_schools_centered", "bimodal", "collinear")
SHORT = {"eight_schools-eight_schools_noncentered": "eight_schools_nc",
         "kidiq-kidscore_interaction": "kidiq", "sblrc-blr": "sblrc", "nes2000-nes": "nes",
         "gp_pois_regr-gp_pois_regr": "gp_pois_regr", "diamonds-diamonds": "diamonds"}
ALL = tuple(SHORT.values()) + EXTRA


# ----------------------------------------------------------------------------- models
def funnel(dim: int = 10):
    # Neal's funnel: v ~ N(0, 3^2), x_i | v ~ N(0, exp(v / 2)^2), i < dim.
    def model():
        v = pyro.sample("v", dist.Normal(torch.tensor(0.0), 3.0))
        pyro.sample("x", dist.Normal(torch.zeros(dim - 1), torch.exp(v / 2)[..., None])
                    .to_event(1))

    gen = torch.Generator().manual_seed(1)
    v = 3.0 * torch.randn(200_000, generator=gen, dtype=torch.float64)
    x = torch.randn(200_000, dim - 1, generator=gen, dtype=torch.float64) * torch.exp(
        v / 2)[:, None]
    return model, (), {"v": v, "x": x}


def eight_schools_centered():
    ref = pdb.load("eight_schools-eight_schools_noncentered")
    y, sigma = ref.args

    def model(y, sigma):
        mu = pyro.sample("mu", dist.Normal(y.new_tensor(0.0), 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(y.new_tensor(5.0)))
        theta = pyro.sample("theta", dist.Normal(mu[..., None] * torch.ones_like(y),
                                                 tau[..., None]).to_event(1))
        pyro.sample("y", dist.Normal(theta, sigma).to_event(1), obs=y)

    reference = {k: torch.as_tensor(v) for k, v in ref.reference.items()}
    return model, (y, sigma), reference


BIMODAL_MEANS = torch.tensor([[-3.0, -3.0], [3.0, 3.0]], dtype=torch.float64)
BIMODAL_WEIGHTS = torch.tensor([0.3, 0.7], dtype=torch.float64)
BIMODAL_PRIOR_SD, BIMODAL_SD = 5.0, 0.5


def bimodal():
    # Prior N(0, 5^2 I) times the mixture 0.3 N(-3, 0.5^2 I) + 0.7 N(3, 0.5^2 I): the
    # posterior is a two-component Gaussian mixture with exact weights and moments.
    def model():
        z = pyro.sample("z", dist.Normal(torch.zeros(2), BIMODAL_PRIOR_SD).to_event(1))
        comp = dist.Normal(BIMODAL_MEANS.to(z), BIMODAL_SD).to_event(1).log_prob(
            z[..., None, :]) + BIMODAL_WEIGHTS.log().to(z)
        pyro.factor("mixture", torch.logsumexp(comp, -1))

    p2, s2 = BIMODAL_PRIOR_SD ** 2, BIMODAL_SD ** 2
    post_var = 1 / (1 / p2 + 1 / s2)
    post_means = BIMODAL_MEANS * post_var / s2
    # Each component's evidence: N(m_k; 0, (p2 + s2) I).
    log_w = BIMODAL_WEIGHTS.log() + dist.Normal(0.0, math.sqrt(p2 + s2)).log_prob(
        BIMODAL_MEANS).sum(-1)
    weights = torch.softmax(log_w, 0)
    gen = torch.Generator().manual_seed(2)
    n = 200_000
    k = torch.multinomial(weights, n, replacement=True, generator=gen)
    z = post_means[k] + math.sqrt(post_var) * torch.randn(n, 2, generator=gen,
                                                           dtype=torch.float64)
    return model, (), {"z": z}, float(weights[1])


def collinear():
    # y ~ N(X beta, 1) with two almost identical predictors: a posterior correlation of
    # about -0.9999 between beta[1] and beta[2]; Gaussian, so the reference is exact.
    gen = torch.Generator().manual_seed(3)
    n = 100
    x1 = torch.randn(n, generator=gen, dtype=torch.float64)
    x2 = x1 + 3e-3 * torch.randn(n, generator=gen, dtype=torch.float64)
    X = torch.stack([torch.ones(n, dtype=torch.float64), x1, x2], -1)
    beta_true = torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64)
    y = X @ beta_true + torch.randn(n, generator=gen, dtype=torch.float64)

    def model(X, y):
        beta = pyro.sample("beta", dist.Normal(X.new_zeros(3), 10.0).to_event(1))
        pyro.sample("y", dist.Normal(beta @ X.T, 1.0).to_event(1), obs=y)

    prec = X.T @ X + torch.eye(3, dtype=torch.float64) / 100.0
    cov = torch.linalg.inv(prec)
    mean = cov @ X.T @ y
    draws = dist.MultivariateNormal(mean, cov).sample((200_000,))
    corr = cov[1, 2] / (cov[1, 1] * cov[2, 2]).sqrt()
    print(f"collinear: posterior correlation {float(corr):.6f}")
    return model, (X, y), {"beta": draws}


def load(name: str):
    """``(model, args, reference {name: (n, ...)}, init_fn, extra)``."""
    if name in EXTRA:
        if name == "bimodal":
            model, args, ref, share = bimodal()
            return model, args, ref, fi.init_to_median_or_zero, {"share": share}
        model, args, ref = {"funnel": funnel, "eight_schools_centered": eight_schools_centered,
                            "collinear": collinear}[name]()
        return model, args, ref, fi.init_to_median_or_zero, {}
    full = next(k for k, v in SHORT.items() if v == name)
    post = pdb.load(full)
    ref = {k: torch.as_tensor(v) for k, v in post.reference.items()}
    return post.model, post.args, ref, pdb.init_loc_fn, {}


# ----------------------------------------------------------------------------- metrics
def columns(samples: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Flat draws ``(S, len(names))``; names ``site`` or ``site[i]`` (1-based, flattened)."""
    cols = []
    for ref_name in names:
        base, _, index = ref_name.partition("[")
        value = np.asarray(samples[base], dtype=float)
        value = value.reshape(value.shape[0], -1)
        cols.append(value[:, int(index.rstrip("]")) - 1] if index else value[:, 0])
    return np.stack(cols, -1)


def reference_columns(ref: dict[str, torch.Tensor]) -> tuple[list[str], np.ndarray]:
    names, cols = [], []
    for k, v in ref.items():
        v = v.reshape(v.shape[0], -1).double().numpy()
        if "[" in k or v.shape[1] == 1:
            names.append(k)
            cols.append(v[:, 0])
        else:
            for i in range(v.shape[1]):
                names.append(f"{k}[{i + 1}]")
                cols.append(v[:, i])
    return names, np.stack(cols, -1)


def errors(draws: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    per_mean, per_sd = coordinate_errors(draws, ref)
    return float(np.max(np.abs(per_mean))), float(np.max(np.abs(per_sd)))


def coordinate_errors(draws: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per coordinate: (mean - ref mean) / ref sd, and log(sd / ref sd)."""
    m, s = ref.mean(0), ref.std(0)
    return (draws.mean(0) - m) / s, np.log(draws.std(0) / s)


def idata_samples(idata) -> dict[str, np.ndarray]:
    post = idata.posterior
    return {k: post[k].values.reshape((-1,) + post[k].shape[2:]) for k in post.data_vars}


# ----------------------------------------------------------------------------- runs
def run_infer(name: str, num_draws: int, seed: int, quick: bool) -> dict:
    model, args, ref, _, extra = load(name)
    names, ref_cols = reference_columns(ref)
    pyro.set_rng_seed(seed)
    options = {"num_draws": num_draws, "seed": seed, "progress": False, "report": True}
    if quick:
        options.update(max_vi_steps=1000, check_draws=2000)
    start = time.perf_counter()
    idata = fi.infer(model, *args, **options)
    wall = time.perf_counter() - start
    draws = columns(idata_samples(idata), names)
    mean_err, sd_err = errors(draws, ref_cols)
    per_mean, per_sd = coordinate_errors(draws, ref_cols)
    a = idata.attrs
    out = {"model": name, "method": "fi.infer", "wall_time": wall, "mean_err": mean_err,
           "log_sd_err": sd_err, "route": a["route"], "khat": a["khat"],
           "ess_is": a["ess"], "rhat": a.get("rhat_max"), "ess_bulk": a.get("ess_bulk_min"),
           "checks_passed": a["checks_passed"], "kernel": a.get("kernel"),
           "num_modes": a["num_modes"], "timings": a["timings"],
           "reparam": a.get("reparam"), "nuts_rounds": a.get("nuts_rounds"),
           "coordinates": names, "coord_mean_err": per_mean.tolist(),
           "coord_log_sd_err": per_sd.tolist()}
    if "share" in extra:
        out["share_true"] = extra["share"]
        out["share"] = float((idata_samples(idata)["z"][:, 0] > 0).mean())
    return out


def run_nuts(name: str, num_draws: int, seed: int, warmup: int) -> dict:
    import arviz as az
    from pyro.infer import MCMC, NUTS

    model, args, ref, init_fn, extra = load(name)
    names, ref_cols = reference_columns(ref)
    pyro.set_rng_seed(seed)
    start = time.perf_counter()
    # Flat (ImproperUniform) priors cannot be sampled, which Pyro's setup does to guess the
    # plate nesting: the init messenger answers instead (the potential is unchanged).
    from pyro.infer.autoguide.initialization import InitMessenger

    mcmc = MCMC(NUTS(InitMessenger(init_fn)(model), init_strategy=init_fn),
                num_samples=num_draws,
                warmup_steps=warmup, disable_progbar=True)
    mcmc.run(*args)
    wall = time.perf_counter() - start
    samples = {k: v.numpy() for k, v in mcmc.get_samples().items()}
    # Deterministic sites (eight_schools' theta, gp's f) for the comparison.
    from flowinfer.inference.groups import complete_posterior

    full = complete_posterior(model, mcmc.get_samples(), args, {})
    samples.update({k: v.numpy() for k, v in full.items() if k not in samples})
    draws = columns(samples, names)
    mean_err, sd_err = errors(draws, ref_cols)
    per_mean, per_sd = coordinate_errors(draws, ref_cols)
    idata = az.from_pyro(mcmc)
    rhat = float(az.rhat(idata).to_array().max())
    ess = float(az.ess(idata).to_array().min())
    divergences = int(idata.sample_stats["diverging"].values.sum())
    out = {"model": name, "method": "NUTS", "wall_time": wall, "mean_err": mean_err,
           "log_sd_err": sd_err, "rhat": rhat, "ess_bulk": ess, "divergences": divergences,
           "coordinates": names, "coord_mean_err": per_mean.tolist(),
           "coord_log_sd_err": per_sd.tolist()}
    if "share" in extra:
        out["share_true"] = extra["share"]
        out["share"] = float((samples["z"][:, 0] > 0).mean())
    return out


# ----------------------------------------------------------------------------- output
def table(folder: Path) -> str:
    rows = {}
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        rows.setdefault(r["model"], {})[r["method"]] = r
    fmt = lambda v, f=".2f": "-" if v is None or (isinstance(v, float) and math.isnan(v)) \
        else format(float(v), f)  # noqa: E731
    lines = ["| model | fi.infer time (s) | NUTS time (s) | route | k-hat | R-hat | ESS "
             "| mean err fi / NUTS | log-sd err fi / NUTS | mode share fi / NUTS (true) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model in [m for m in ALL if m in rows]:
        f, n = rows[model].get("fi.infer", {}), rows[model].get("NUTS", {})
        ess = f.get("ess_bulk") if f.get("route") == "nuts" else f.get("ess_is")
        route = f.get("route", "-") + (f" ({f['kernel']})" if f.get("kernel") else "")
        if str(f.get("reparam", "")).startswith("non-centred"):
            route += ", non-centred"
        share = (f"{fmt(f.get('share'))} / {fmt(n.get('share'))} ({fmt(f.get('share_true'))})"
                 if "share_true" in f or "share_true" in n else "")
        lines.append(
            f"| {model} | {fmt(f.get('wall_time'), '.1f')} | {fmt(n.get('wall_time'), '.1f')} "
            f"| {route} | {fmt(f.get('khat'))} | {fmt(f.get('rhat'), '.3f')} "
            f"| {fmt(ess, '.0f')} | {fmt(f.get('mean_err'), '.3f')} / "
            f"{fmt(n.get('mean_err'), '.3f')} | {fmt(f.get('log_sd_err'), '.3f')} / "
            f"{fmt(n.get('log_sd_err'), '.3f')} | {share} |")
    return "\n".join(lines)


def figure(folder: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {}
    for p in sorted(folder.glob("*.json")):
        r = json.loads(p.read_text())
        rows.setdefault(r["model"], {})[r["method"]] = r
    models = [m for m in ALL if m in rows]
    x = np.arange(len(models))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, title in zip(axes, ("mean_err", "log_sd_err", "wall_time"),
                              ("max |mean err| / ref sd", "max |log sd ratio|",
                               "wall time (s)"), strict=True):
        for shift, method, color in ((-0.2, "fi.infer", "C0"), (0.2, "NUTS", "C1")):
            vals = [rows[m].get(method, {}).get(key, np.nan) for m in models]
            ax.bar(x + shift, vals, 0.4, label=method, color=color)
        if key != "wall_time":
            ax.axhline(0.1, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(x, models, rotation=60, ha="right", fontsize=8)
        ax.set_title(title)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(ALL), choices=ALL)
    parser.add_argument("--methods", nargs="*", default=["fi.infer", "NUTS"],
                        choices=["fi.infer", "NUTS"])
    parser.add_argument("--num-draws", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=1000, help="plain NUTS warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="shorter budgets (VI 1000 steps, 2000 check draws, NUTS 300+300)")
    parser.add_argument("--out", type=Path, default=Path("out/infer_bench"))
    parser.add_argument("--table", type=Path, default=None,
                        help="print the markdown table of a results folder and write the figure")
    parser.add_argument("--figure", type=Path, default=Path("docs/figures/infer_benchmark.png"))
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    if args.table is not None:
        print(table(args.table))
        figure(args.table, args.figure)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        if name in SHORT.values():
            full = next(k for k, v in SHORT.items() if v == name)
            if not (pdb.DATA_DIR / full).is_dir():
                print(f"{name}: skipped (no posteriordb data at {pdb.DATA_DIR})")
                continue
        for method in args.methods:
            if method == "fi.infer":
                result = run_infer(name, args.num_draws, args.seed, args.quick)
            else:
                warmup = 300 if args.quick else args.warmup
                draws = 300 if args.quick else args.num_draws
                result = run_nuts(name, draws, args.seed, warmup)
            # The machine is shared: the load average says how much of a core a run had.
            result["load_average"] = os.getloadavg()[0]
            tag = "fi" if method == "fi.infer" else "nuts"
            (args.out / f"{name}.{tag}.json").write_text(json.dumps(result, indent=1))
            print(json.dumps({k: v for k, v in result.items()
                              if k != "timings" and not k.startswith("coord")}))


if __name__ == "__main__":
    main()
