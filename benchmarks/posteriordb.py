"""Flow guides against Pyro's autoguides on six posteriordb posteriors (Stan reference draws).

For every posterior and guide: the same optimizer (ClippedAdam, learning rate decaying 10x
over the run), the same number of steps and of vectorized ELBO particles, then
``num_eval`` draws from the guide to measure

* the setup time (the first SVI step, which builds the guide and runs ``fi.AutoFlow``'s
  warm start) and the time per later SVI step (wall clock),
* the ELBO (mean log importance weight of the evaluation draws) with its standard error,
* PSIS k-hat of the importance weights (Yao et al. 2018: < 0.5 good, < 0.7 usable),
* the error against the Stan reference draws: the largest |mean_q - mean_ref| / sd_ref and
  the largest |log(sd_q / sd_ref)| over all coordinates (plain guide draws, no resampling).

Run ``python benchmarks/posteriordb.py`` (``--quick`` for a smoke run, ``--posteriors`` and
``--guides`` to pick, ``--steps``/``--particles``/``--lr`` to change the budget). Results go
to ``<out>/results.json`` (appended as each run finishes) and ``<out>/table.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.distributions.transforms import block_autoregressive, iterated
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import (
    AutoIAFNormal,
    AutoMultivariateNormal,
    AutoNormal,
    AutoNormalizingFlow,
)
from pyro.infer.autoguide.initialization import InitMessenger

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import posteriordb_models as pdb  # noqa: E402

import flowinfer as fi  # noqa: E402
from flowinfer.inference.diagnostics import DiagnosticReport  # noqa: E402
from flowinfer.inference.importance import importance_draws  # noqa: E402
from flowinfer.train.optim import progress  # noqa: E402

# Pyro's IAF at the size of fi.AutoFlow's default iaf (5 layers, two hidden layers of 64).
GUIDES = {
    "AutoNormal": lambda m: AutoNormal(m, init_loc_fn=pdb.init_loc_fn),
    "AutoMultivariateNormal": lambda m: AutoMultivariateNormal(m, init_loc_fn=pdb.init_loc_fn),
    # Pyro's two flow guides ignore init_loc_fn (their base is a fixed N(0, 1)); wrapping the
    # model lets them set up on flat priors, whose sites init_to_median cannot sample.
    "AutoIAFNormal (Pyro)": lambda m: AutoIAFNormal(
        InitMessenger(pdb.init_loc_fn)(m), hidden_dim=[64, 64], num_transforms=5),
    "AutoNormalizingFlow BNAF (Pyro)": lambda m: AutoNormalizingFlow(
        InitMessenger(pdb.init_loc_fn)(m), partial(iterated, 1, block_autoregressive)),
    "fi.AutoFlow iaf": lambda m: fi.AutoFlow(m, "iaf", init_loc_fn=pdb.init_loc_fn),
    "fi.AutoFlow nsf": lambda m: fi.AutoFlow(m, "nsf", init_loc_fn=pdb.init_loc_fn),
    "fi.AutoFlow realnvp": lambda m: fi.AutoFlow(m, "realnvp", init_loc_fn=pdb.init_loc_fn),
    # The default iaf guide as built, before any SVI step: its warm start alone (the
    # Laplace approximation when that wins), to show what the flow training adds.
    "fi.AutoFlow iaf, start only": lambda m: fi.AutoFlow(m, "iaf",
                                                         init_loc_fn=pdb.init_loc_fn),
}
UNTRAINED = {"fi.AutoFlow iaf, start only"}


def reference_errors(samples: dict[str, torch.Tensor], post: pdb.Posterior) -> tuple[float,
                                                                                     float]:
    """Largest standardized mean error and largest |log sd ratio| over all coordinates."""
    names, ref = post.reference_matrix()
    draws = pdb.flatten_draws(samples, names)
    ref_sd = ref.std(0, ddof=1)
    mean_err = np.abs(draws.mean(0) - ref.mean(0)) / ref_sd
    sd_err = np.abs(np.log(draws.std(0, ddof=1) / ref_sd))
    return float(mean_err.max()), float(sd_err.max())


def run_one(post: pdb.Posterior, guide_name: str, steps: int, particles: int, lr: float,
            num_eval: int, seed: int, show: bool | None) -> dict:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = GUIDES[guide_name](post.model)
    optim = pyro.optim.ClippedAdam({"lr": lr, "clip_norm": 10.0, "lrd": 0.1 ** (1 / steps)})
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=0)
    svi = SVI(post.model, guide, optim, elbo)
    row = {"posterior": post.name, "guide": guide_name, "steps": steps,
           "particles": particles, "lr": lr, "seed": seed}
    try:
        start = time.perf_counter()
        if guide_name in UNTRAINED:
            with pyro.poutine.block():
                guide(*post.args)  # builds the guide (and runs its warm start)
            row["setup_sec"], row["sec_per_step"] = time.perf_counter() - start, None
        else:
            svi.step(*post.args)  # builds the guide (warm start included) and takes a step
            row["setup_sec"] = time.perf_counter() - start
            start = time.perf_counter()
            for step in progress(range(steps - 1), show, desc=f"{guide_name}"):
                loss = svi.step(*post.args)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at step {step + 1}")
            row["sec_per_step"] = (time.perf_counter() - start) / (steps - 1)
        if getattr(guide, "warm_start_info", None):
            row["warm_start"] = guide.warm_start_info["chosen"]
        lw, samples, _ = importance_draws(post.model, guide, *post.args, num_samples=num_eval,
                                          chunk_size=500)
        report = DiagnosticReport.from_log_weights(lw)
        row.update(elbo=report.elbo, elbo_se=report.elbo_se, khat=report.khat,
                   log_z=report.log_z, ess_fraction=report.ess_fraction)
        row["mean_err"], row["log_sd_err"] = reference_errors(samples, post)
    except Exception as e:  # noqa: BLE001 - a failing guide is a result, not a crash
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return row


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| posterior | guide | setup s | ms/step | ELBO | k-hat | max mean err / sd "
        "| max abs log sd ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    several_seeds = len({r.get("seed") for r in rows}) > 1
    for r in rows:
        short = r["posterior"].split("-")[0]
        if several_seeds:
            short += f" (seed {r.get('seed')})"
        if "error" in r:
            lines.append(f"| {short} | {r['guide']} | failed: {r['error']} | | | | | |")
            continue
        per_step = "-" if r["sec_per_step"] is None else f"{1000 * r['sec_per_step']:.1f}"
        setup = f"{r['setup_sec']:.2f}" if "setup_sec" in r else "n/a"
        guide = r["guide"] + (f" [{r['warm_start']}]" if "warm_start" in r else "")
        lines.append(
            f"| {short} | {guide} | {setup} | {per_step} | "
            f"{r['elbo']:.2f} +- {r['elbo_se']:.2f} | {r['khat']:.2f} | "
            f"{r['mean_err']:.3f} | {r['log_sd_err']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    warnings.filterwarnings("ignore", message="The `init_loc_fn` argument to AutoIAFNormal")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posteriors", nargs="+", default=list(pdb.POSTERIORS),
                        help="posterior names (default: all six); prefixes are accepted")
    parser.add_argument("--guides", nargs="+", default=list(GUIDES), choices=list(GUIDES))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--particles", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--num-eval", type=int, default=2000)
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="one or more seeds; every (posterior, guide) runs for each")
    parser.add_argument("--quick", action="store_true", help="50 steps, 200 draws: a smoke run")
    parser.add_argument("--out", type=Path, default=Path("out/posteriordb"))
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--table-from", nargs="+", type=Path, default=None, metavar="JSON",
                        help="only rebuild <out>/table.md from results.json files (later "
                        "files replace earlier rows of the same posterior and guide)")
    a = parser.parse_args(argv)
    if a.table_from:
        merged = {}
        for path in a.table_from:
            for row in json.loads(path.read_text()):
                merged[(row["posterior"], row["guide"], row.get("seed"))] = row
        order = {(p, g): (i, j) for i, p in enumerate(pdb.POSTERIORS)
                 for j, g in enumerate(GUIDES)}
        rows = sorted(merged.values(), key=lambda r: (*order.get((r["posterior"], r["guide"]),
                                                                 (99, 99)), r.get("seed", 0)))
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "table.md").write_text(markdown_table(rows))
        print(markdown_table(rows))
        return
    if a.quick:
        a.steps, a.num_eval = 50, 200
    if a.steps < 2 or a.particles < 1 or a.num_eval < 10:
        parser.error("--steps must be >= 2, --particles >= 1, --num-eval >= 10")
    names = []
    for p in a.posteriors:
        match = [n for n in pdb.POSTERIORS if n.startswith(p)]
        if not match:
            parser.error(f"unknown posterior {p!r}; known: {', '.join(pdb.POSTERIORS)}")
        names += match
    # float64 for every guide: the GP kernel's Cholesky needs it, and it keeps the race fair.
    torch.set_default_dtype(torch.float64)
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        post = pdb.load(name)
        for guide_name in a.guides:
            for seed in a.seed:
                row = run_one(post, guide_name, a.steps, a.particles, a.lr, a.num_eval, seed,
                              a.progress)
                rows.append(row)
                print(json.dumps(row), flush=True)
                (a.out / "results.json").write_text(json.dumps(rows, indent=1))
    table = markdown_table(rows)
    (a.out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
