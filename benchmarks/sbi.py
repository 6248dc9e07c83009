"""NPE on four sbibm tasks, written as plain Pyro models, against sbi's published C2ST.

Tasks (definitions from sbibm, Lueckmann et al. 2021; data in ``../shared/data/sbibm``):
two_moons, slcp, gaussian_linear_uniform, sir. For each task and simulation budget, one
amortized NPE (``fi.NPE(model, observed="x")``, library defaults) is trained once and then
read off for each observation:

* C2ST exactly as sbibm computes it: both sample sets z-scored with the reference draws' mean
  and sd, ``MLPClassifier(hidden_layer_sizes=(10*dim, 10*dim), activation="relu",
  solver="adam", max_iter=10000, random_state=1)``, 5-fold ``KFold(shuffle=True,
  random_state=1)``, mean accuracy; 10,000 NPE draws against the 10,000 reference draws;
* simulation, training and sampling time (10,000 draws per observation);
* leakage: the share of draws outside the prior's support (0 by construction);
* the SBC verdict (``fi.sbc``) at the 10,000 budget (or the largest one run).

``--sequential`` also runs truncated sequential NPE (``rounds=10``) per observation at the
given budgets. Results are appended to ``<out>/results.jsonl`` as they finish; ``table.md``
and ``c2st.png`` (C2ST against budget, ours and sbi's published curves) are rewritten at the
end. Run ``python benchmarks/sbi.py --quick`` for a smoke test; the full run
(``--budgets 1000 10000 100000 --observations 1-10 --sequential 10000``) takes many CPU hours.

References:
    Lueckmann et al. (2021), "Benchmarking Simulation-Based Inference", AISTATS.
    Lopez-Paz & Oquab (2017), "Revisiting classifier two-sample tests", ICLR.
"""

from __future__ import annotations

import argparse
import bz2
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flowinfer as fi  # noqa: E402
from flowinfer.npe.options import tuples  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sbibm"

#: sbi's published C2ST (sbibm results files), mean over the 10 observations, at
#: 1,000 / 10,000 / 100,000 simulations: one-round NPE and sequential NPE (10 rounds).
PUBLISHED = {
    "two_moons": {"NPE": (0.725, 0.606, 0.542), "SNPE": (0.643, 0.554, 0.530)},
    "slcp": {"NPE": (0.975, 0.901, 0.831), "SNPE": (0.965, 0.845, 0.666)},
    "gaussian_linear_uniform": {"NPE": (0.696, 0.553, 0.509), "SNPE": (0.631, 0.527, 0.507)},
    "sir": {"NPE": (0.815, 0.680, 0.585), "SNPE": (0.638, 0.561, 0.575)},
}
BUDGETS = (1000, 10_000, 100_000)


# ------------------------------------------------------------------------------ the tasks
class MoonNoise(dist.TorchDistribution):
    """two_moons' simulator noise: ``(r cos a + 0.25, r sin a)``, a ~ U(-pi/2, pi/2),
    r ~ N(0.1, 0.01^2), with its density (polar change of variables) so Pyro can score it."""

    arg_constraints = {"loc": constraints.real_vector}
    support = constraints.real_vector

    def __init__(self, loc, validate_args=None):
        self.loc = loc
        super().__init__(loc.shape[:-1], loc.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return MoonNoise(self.loc.expand(*batch_shape, 2))

    def sample(self, sample_shape=()):
        shape = self._extended_shape(torch.Size(sample_shape))[:-1]
        a = (torch.rand(shape) - 0.5) * math.pi
        r = 0.1 + 0.01 * torch.randn(shape)
        p = torch.stack([r * torch.cos(a) + 0.25, r * torch.sin(a)], -1)
        return self.loc + p.to(self.loc.dtype)

    def log_prob(self, value):
        p = value - self.loc
        dx, dy = p[..., 0] - 0.25, p[..., 1]
        r = torch.sqrt(dx**2 + dy**2)
        inside = dx > 0
        lp = (dist.Normal(0.1, 0.01).log_prob(r) - math.log(math.pi) - torch.log(r))
        return torch.where(inside, lp, torch.full_like(lp, -math.inf))


def two_moons():
    theta = pyro.sample("theta", dist.Uniform(-torch.ones(2), torch.ones(2)).to_event(1))
    t1, t2 = theta[..., 0], theta[..., 1]
    shift = torch.stack([-(t1 + t2).abs() / math.sqrt(2), (-t1 + t2) / math.sqrt(2)], -1)
    pyro.sample("x", MoonNoise(shift))


def slcp():
    theta = pyro.sample("theta", dist.Uniform(-3 * torch.ones(5), 3 * torch.ones(5))
                        .to_event(1))
    m = theta[..., :2]
    s1, s2 = theta[..., 2] ** 2, theta[..., 3] ** 2
    rho = torch.tanh(theta[..., 4])
    # Cholesky factor of [[s1^2, rho s1 s2], [rho s1 s2, s2^2]].
    zero = torch.zeros_like(s1)
    tril = torch.stack([torch.stack([s1, zero], -1),
                        torch.stack([rho * s2, torch.sqrt(1 - rho**2) * s2], -1)], -2)
    mvn = dist.MultivariateNormal(m.unsqueeze(-2), scale_tril=tril.unsqueeze(-3))
    pyro.sample("x", mvn.expand(m.shape[:-1] + (4,)).to_event(1))


def gaussian_linear_uniform():
    theta = pyro.sample("theta", dist.Uniform(-torch.ones(10), torch.ones(10)).to_event(1))
    pyro.sample("x", dist.Normal(theta, math.sqrt(0.1)).to_event(1))


def _sir_infected(beta, gamma, n=1e6, days=160, dt=0.1):
    """I(t) at days 0, 17, ..., 153 of the SIR ODE (classical RK4, step dt, float64)."""
    b, g = beta.double(), gamma.double()
    s, i = torch.full_like(b, n - 1.0), torch.ones_like(b)

    def f(s, i):
        inf = b * s * i / n
        return -inf, inf - g * i

    out, per_day = [i], round(1 / dt)
    for day in range(1, days + 1):
        for _ in range(per_day):
            k1 = f(s, i)
            k2 = f(s + 0.5 * dt * k1[0], i + 0.5 * dt * k1[1])
            k3 = f(s + 0.5 * dt * k2[0], i + 0.5 * dt * k2[1])
            k4 = f(s + dt * k3[0], i + dt * k3[1])
            s = s + dt / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
            i = i + dt / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        if day % 17 == 0:
            out.append(i)
    return torch.stack(out, -1)[..., :10] / n


def sir():
    loc = torch.tensor([math.log(0.4), math.log(0.125)])
    theta = pyro.sample("theta", dist.LogNormal(loc, torch.tensor([0.5, 0.2])).to_event(1))
    frac = _sir_infected(theta[..., 0], theta[..., 1]).clamp(0.0, 1.0)
    pyro.sample("x", dist.Binomial(1000, probs=frac.to(theta.dtype)).to_event(1))


TASKS = {"two_moons": (two_moons, (2,)), "slcp": (slcp, (4, 2)),
         "gaussian_linear_uniform": (gaussian_linear_uniform, (10,)), "sir": (sir, (10,))}


# ------------------------------------------------------------------------------ data, C2ST
def _csv(path: Path) -> np.ndarray:
    opener = bz2.open if path.suffix == ".bz2" else open
    with opener(path, "rt") as f:
        return np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2)


def load_observation(task: str, k: int) -> tuple[torch.Tensor, np.ndarray]:
    folder = DATA / task / "files" / f"num_observation_{k}"
    x = torch.as_tensor(_csv(folder / "observation.csv")[0], dtype=torch.float32)
    reference = _csv(folder / "reference_posterior_samples.csv.bz2")
    return x.reshape(TASKS[task][1]), reference


def c2st(x: np.ndarray, y: np.ndarray) -> float:
    """sbibm's C2ST: z-score by y's (the reference's) moments, MLP, 5-fold mean accuracy."""
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPClassifier

    mean, std = y.mean(0), y.std(0)
    data = np.concatenate([(x - mean) / std, (y - mean) / std])
    target = np.concatenate([np.zeros(len(x)), np.ones(len(y))])
    dim = x.shape[1]
    clf = MLPClassifier(activation="relu", hidden_layer_sizes=(10 * dim, 10 * dim),
                        max_iter=10000, solver="adam", random_state=1)
    folds = KFold(n_splits=5, shuffle=True, random_state=1)
    return float(np.mean(cross_val_score(clf, data, target, cv=folds, scoring="accuracy")))


# ------------------------------------------------------------------------------ runs
def _draws(npe, x, n=10_000):
    start = time.perf_counter()
    draws = npe.sample(n, x=x)
    seconds = time.perf_counter() - start
    inside = npe.info.in_support(draws)
    theta = draws["theta"].reshape(n, -1).double().numpy()
    return theta, seconds, float(1.0 - inside.double().mean())


def run_npe(task, budget, observations, seed, out, sbc_budget, quick, variant):
    model, _ = TASKS[task]
    torch.manual_seed(seed)
    npe = fi.NPE(model, observed="x", constant_data="keep", **variant["npe"])
    npe.fit(num_simulations=budget, seed=seed, progress=False,
            **({"epochs": 3} if quick else {}), **variant["fit"])
    result = {"task": task, "method": "NPE", "budget": budget, "seed": seed,
              "variant": variant["name"],
              "simulation_s": npe.timings["simulation"], "training_s": npe.timings["training"],
              "epochs": len(npe.results[-1].history["train_loss"]),
              "vectorized": npe.simulations.vectorized,
              "embedding": (npe.selection or {}).get("chosen", npe.embedding_kind),
              "dropped": npe.simulations.num_nonfinite + npe.simulations.num_failed,
              "per_observation": []}
    for k in observations:
        x, reference = load_observation(task, k)
        theta, seconds, leak = _draws(npe, x, 1000 if quick else 10_000)
        score = c2st(theta, reference[:1000] if quick else reference)
        result["per_observation"].append({"observation": k, "c2st": score,
                                          "sampling_s": seconds, "leakage": leak})
        print(f"  {task} NPE {budget} obs {k}: C2ST {score:.3f} leak {leak} "
              f"sample {seconds:.2f}s", flush=True)
    if budget == sbc_budget:
        start = time.perf_counter()
        check = fi.sbc(npe, num_simulations=100 if quick else 1000,
                       num_posterior_samples=100, seed=seed + 1)
        result["sbc"] = {"passed": check.passed, "verdict": check.verdict,
                         "min_p": float(check.p_values.min()),
                         "seconds": time.perf_counter() - start}
        check.plot(out / f"sbc_{task}.png")
    _finish(result, out)


def run_snpe(task, budget, observations, seed, out, rounds, quick, variant):
    model, _ = TASKS[task]
    result = {"task": task, "method": "SNPE", "budget": budget, "seed": seed,
              "variant": variant["name"],
              "rounds": rounds, "per_observation": []}
    for k in observations:
        x, reference = load_observation(task, k)
        torch.manual_seed(seed)
        npe = fi.NPE(model, observed="x", constant_data="keep", **variant["npe"])
        npe.fit(num_simulations=budget, rounds=rounds, observation=x, seed=seed,
                progress=False, **({"epochs": 3} if quick else {}), **variant["fit"],
                **variant["snpe"])
        theta, seconds, leak = _draws(npe, x, 1000 if quick else 10_000)
        score = c2st(theta, reference[:1000] if quick else reference)
        result["per_observation"].append({
            "observation": k, "c2st": score, "sampling_s": seconds, "leakage": leak,
            "simulation_s": npe.timings["simulation"], "training_s": npe.timings["training"],
            "region_prior_mass": list(npe.truncation),
            "region_posterior_inside": npe.truncation_inside})
        inside = ("-" if npe.truncation_inside is None
                  else f"{npe.truncation_inside:.2f}")
        print(f"  {task} SNPE {budget} obs {k}: C2ST {score:.3f} leak {leak}; truncation "
              f"regions' prior mass {[round(m, 3) for m in npe.truncation]}, round 2's pairs' "
              f"posteriors inside {inside}; training {npe.timings['training']:.0f} s",
              flush=True)
    _finish(result, out)


def _finish(result, out):
    scores = [o["c2st"] for o in result["per_observation"]]
    result["c2st_mean"] = float(np.mean(scores)) if scores else None
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")


# ------------------------------------------------------------------------------ report
def _published(task, method, budget):
    i = BUDGETS.index(budget) if budget in BUDGETS else None
    return None if i is None else PUBLISHED[task][method][i]


def write_report(out: Path) -> str:
    with open(out / "results.jsonl") as f:
        rows = [json.loads(line) for line in f]
    lines = ["| task | method | variant | sims | obs | C2ST ours | C2ST sbi | sim s | train s | "
             "sample s/obs | leakage | SBC |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        obs = [o["observation"] for o in r["per_observation"]]
        pub = _published(r["task"], r["method"], r["budget"])
        per = r["per_observation"]
        sim = r.get("simulation_s", np.mean([o.get("simulation_s", 0) for o in per]))
        train = r.get("training_s", np.mean([o.get("training_s", 0) for o in per]))
        sample = np.mean([o["sampling_s"] for o in per])
        leak = max(o["leakage"] for o in per)
        sbc = r.get("sbc", {}).get("verdict", "").split(":")[0] or "-"
        lines.append(f"| {r['task']} | {r['method']} | {r.get('variant', 'default')} | "
                     f"{r['budget']} | {_ranges(obs)} | "
                     f"{r['c2st_mean']:.3f} | {pub if pub is not None else '-'} | {sim:.1f} | "
                     f"{train:.1f} | {sample:.2f} | {leak:g} | {sbc} |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    _figure(rows, out / "c2st.png")
    return table


def _ranges(values):
    """``[1, 2, 3, 5]`` -> ``"1-3,5"``."""
    parts, start = [], None
    for i, v in enumerate(values):
        start = v if start is None else start
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(v) if v == start else f"{start}-{v}")
            start = None
    return ",".join(parts)


#: Line styles of our variants in the figure (the default first; dashed is sbi's).
_STYLES = ("-", ":", "-.", (0, (3, 1, 1, 1, 1, 1)))


def _figure(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(TASKS)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.0), sharey=True)
    for ax, task in zip(axes, tasks, strict=True):
        for method, color in (("NPE", "C0"), ("SNPE", "C1")):
            ax.plot(BUDGETS, PUBLISHED[task][method], "--", color=color, marker="s", ms=3,
                    alpha=0.6, label=f"sbi {method} (published)")
            variants = sorted({r.get("variant", "default") for r in rows
                               if r["task"] == task and r["method"] == method},
                              key=lambda v: v != "default")
            for k, variant in enumerate(variants):
                # Runs of one budget on different observations are one point: the mean
                # over all their observations.
                scores: dict[int, list[float]] = {}
                for r in rows:
                    if (r["task"], r["method"], r.get("variant", "default")) == (
                            task, method, variant):
                        scores.setdefault(r["budget"], []).extend(
                            o["c2st"] for o in r["per_observation"])
                mine = sorted((b, float(np.mean(v))) for b, v in scores.items())
                ax.plot(*zip(*mine, strict=True), color=color,
                        linestyle=_STYLES[min(k, len(_STYLES) - 1)],
                        marker="ox^v"[min(k, 3)],
                        label=f"flowinfer {method}" + ("" if variant == "default"
                                                       else f" ({variant})"))
        ax.set_xscale("log")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("simulations")
        ax.axhline(0.5, color="k", lw=0.5)
    axes[0].set_ylabel("C2ST (0.5 = exact)")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def gaussian_check(variant: dict, seed: int, patience: int | None, schedule: str | None) -> None:
    """Posterior moments on a conjugate Gaussian outside the benchmark (the defaults' check).

    theta ~ N(mu0, S0) in 2-D, four trials x_i ~ N(theta, 0.8^2 I); 10,000 simulations; for
    two observations, the error of the posterior mean in posterior sds and the relative error
    of the posterior sds (20,000 draws).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "npe"))
    from npe_models import exact_posterior, gaussian_model

    import flowinfer.npe.options as options

    if schedule is not None:
        options.DEFAULT_TRAINING["schedule"] = None if schedule == "none" else schedule
    g = torch.Generator().manual_seed(7)
    xs = [t + 0.8 * torch.randn(4, 2, generator=g)
          for t in (torch.tensor([0.3, -0.5]), torch.tensor([1.5, -2.5]))]
    npe = fi.NPE(gaussian_model, "x", **variant["npe"])
    start = time.perf_counter()
    fit = dict(variant["fit"], **({"patience": patience} if patience else {}))
    result = npe.fit(num_simulations=10_000, seed=seed, progress=False, **fit)
    errors = []
    for x in xs:
        mean, cov = exact_posterior(x)
        torch.manual_seed(0)
        draws = npe.sample(20_000, x=x)["theta"].double()
        sd = cov.diagonal().sqrt()
        errors.append((float(((draws.mean(0) - mean) / sd).abs().max()),
                       float((draws.std(0) / sd - 1).abs().max())))
    print(f"{variant['name']} patience={patience} schedule={schedule}: "
          f"{time.perf_counter() - start:.0f}s, {len(result.history['train_loss'])} epochs, "
          "(mean error/sd, sd rel. error) per observation: "
          + ", ".join(f"({a:.3f}, {b:.3f})" for a, b in errors))


def _parse_observations(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def _variant(args) -> dict:
    """Non-default NPE options from the command line (for the measurements of the defaults)."""
    npe, fit = {}, {}
    if args.flow:
        npe["flow"] = args.flow
    options = json.loads(args.flow_options)
    if options:
        npe["flow_options"] = tuples(options)
    if args.embedding:
        npe["embedding"] = args.embedding
    if args.combine:
        npe["combine"] = args.combine
    if args.replicates:
        npe["replicates"] = args.replicates
    if args.standardize:
        npe["standardize"] = args.standardize
    if args.batch_size:
        fit["batch_size"] = args.batch_size
    if args.lr:
        fit["lr"] = args.lr
    # Sequential runs only (one-round fits take no such option).
    snpe = {"sequential": args.sequential_method} if args.sequential_method else {}
    name = ",".join(f"{k}={v}" for k, v in {**npe, **fit, **snpe}.items()) or "default"
    return {"npe": npe, "fit": fit, "snpe": snpe, "name": name}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--budgets", nargs="*", type=int, default=list(BUDGETS))
    parser.add_argument("--observations", default="1-10", help="e.g. 1-10 or 1,4,7")
    parser.add_argument("--sequential", nargs="*", type=int, default=[],
                        help="budgets for sequential NPE (e.g. 10000)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sequential-method", default=None, choices=["truncated", "atomic"],
                        help="how sequential rounds propose and train (default: NPE's)")
    parser.add_argument("--sbc-budget", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="out/sbi")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny budgets")
    parser.add_argument("--flow", default=None, help="flow name (default: NPE's)")
    parser.add_argument("--flow-options", default="{}", help='JSON, e.g. {"num_layers": 8}')
    parser.add_argument("--embedding", default=None, help="embedding name (default: NPE's)")
    parser.add_argument("--combine", default=None, help="best or mixture (default: NPE's)")
    parser.add_argument("--standardize", default=None,
                        help="prior or regression (default: NPE's)")
    parser.add_argument("--replicates", type=int, default=None,
                        help="copies of each candidate (default: NPE's)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--gaussian-check", action="store_true",
                        help="only the conjugate-Gaussian check of the training defaults")
    parser.add_argument("--patience", type=int, default=None)
    parser.add_argument("--schedule", default=None, help="cosine, plateau or none")
    parser.add_argument("--merge", nargs="+", default=None, metavar="DIR[:VARIANT]",
                        help="only write the report (table and figure) into --out from the "
                             "results.jsonl of these earlier runs' --out folders; "
                             "':VARIANT' relabels a folder's rows (runs made under an "
                             "earlier default)")
    args = parser.parse_args(argv)
    if args.merge:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for item in args.merge:
            folder, _, label = item.partition(":")
            for line in (Path(folder) / "results.jsonl").read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    row["variant"] = label or row.get("variant", "default")
                    rows.append(json.dumps(row))
        (out / "results.jsonl").write_text("\n".join(rows) + "\n")
        print(write_report(out))
        return
    if args.gaussian_check:
        torch.set_num_threads(args.threads)
        gaussian_check(_variant(args), args.seed, args.patience, args.schedule)
        return
    if not DATA.is_dir():
        print(f"sbibm data not found at {DATA}; nothing to do")
        return
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    observations = _parse_observations(args.observations)
    if args.quick:
        args.budgets, observations = [500], observations[:1]
        args.sequential = [400] if args.sequential is not None and args.sequential else []
        args.sbc_budget, args.rounds = 500, 2
    print(f"flowinfer {fi.__version__}, torch threads {torch.get_num_threads()}", flush=True)
    variant = _variant(args)
    for task in args.tasks:
        for budget in args.budgets:
            run_npe(task, budget, observations, args.seed, out, args.sbc_budget, args.quick,
                    variant)
        for budget in args.sequential:
            run_snpe(task, budget, observations, args.seed, out, args.rounds, args.quick,
                     variant)
    print(write_report(out))


if __name__ == "__main__":
    main()
