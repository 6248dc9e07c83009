"""NPE against sbi trained on the same simulations, on sbibm tasks outside ``sbi.py``.

``sbi.py`` compares with sbi's *published* numbers on the four tasks that ship reference
posteriors in ``../shared/data/sbibm``. The issue's promise also covers sbibm tasks we do not
see; ``sbibm_extra.py`` writes five more of them as Pyro models whose reference posterior
can be drawn here (gaussian_linear, gaussian_mixture, bernoulli_glm, bernoulli_glm_raw,
slcp_distractors; see that file for their definitions).

Per task and budget, one set of simulations (``fi.simulate``, one seed) trains both our
``fi.NPE(model, observed=...)`` with library defaults and sbi's NPE with sbibm's NPE settings
(neural spline flow, 50 hidden units, z-scored theta and x, training batch 10,000; sbi's
prior is the model's own prior on ``theta``, traced from it). Each draws ``--draws`` samples
per observation, scored by sbibm's C2ST (``sbi.py``'s ``c2st``) against as many reference draws.
sbi is a benchmark-only extra (``pip install sbi``).

Run: ``python benchmarks/npe_vs_sbi.py --budgets 1000 10000 --observations 1-3``;
``--options '{"standardize": "prior"}'`` passes NPE options to ours (recorded in each row).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
# The script's own folder holds benchmarks/sbi.py, which would shadow the sbi package: put
# the folder last on the path, so ``import sbi`` finds the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]
sys.path.insert(0, str(HERE.parent))

from sbibm_extra import TASKS, observation, sbi_prior, sbibm_tasks  # noqa: E402

import flowinfer as fi  # noqa: E402


# ------------------------------------------------------------------------------ methods
def _flat(values: dict, names) -> torch.Tensor:
    names = [names] if isinstance(names, str) else names
    lead = next(iter(values.values())).shape[0]
    return torch.cat([values[s].reshape(lead, -1).float() for s in names], -1)


def run_ours(task, sims, observations, options=None):
    model, observed = TASKS[task]
    torch.manual_seed(0)
    npe = fi.NPE(model, observed=observed, **(options or {}))
    npe.fit(simulations=sims, seed=0, progress=False)
    draws = {}
    for k, (x, n) in observations.items():
        theta = npe.sample(n, x=x if len(x) > 1 else next(iter(x.values())))["theta"]
        draws[k] = theta.reshape(n, -1).double().numpy()
    return draws, npe.timings["training"], (npe.selection or {}).get("chosen")


def run_sbi(task, sims, observations, batch):
    import sbi.inference
    from sbi.neural_nets import posterior_nn

    _, observed = TASKS[task]
    prior = sbi_prior(task)  # traces the model: before the seed, so training starts alike
    torch.manual_seed(0)
    net = posterior_nn(model="nsf", hidden_features=50, z_score_theta="independent",
                       z_score_x="independent")
    inference = sbi.inference.NPE(prior=prior, density_estimator=net,
                                  show_progress_bars=False)
    theta = _flat(sims.latents, "theta")
    start = time.perf_counter()
    inference.append_simulations(theta, _flat(sims.observed, observed)).train(
        training_batch_size=batch, show_train_summary=False)
    seconds = time.perf_counter() - start
    posterior = inference.build_posterior()
    draws = {}
    for k, (x, n) in observations.items():
        xo = _flat({s: v.unsqueeze(0) for s, v in x.items()}, observed)
        draws[k] = posterior.sample((n,), x=xo, show_progress_bars=False).double().numpy()
    return draws, seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[1000, 10_000])
    parser.add_argument("--observations", default="1-3")
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--sbi-batch", type=int, default=10_000)
    parser.add_argument("--methods", nargs="+", default=["ours", "sbi"])
    parser.add_argument("--options", default="{}",
                        help='JSON fi.NPE options for ours, e.g. \'{"standardize": "prior"}\'')
    parser.add_argument("--out", default="out/npe_vs_sbi")
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for task in args.tasks:
        obs, refs = {}, {}
        for k in sbibm_tasks._parse_observations(args.observations):
            x, refs[k] = observation(task, k, args.draws, out)
            obs[k] = (x, args.draws)
        for budget in args.budgets:
            model, observed = TASKS[task]
            sims = fi.simulate(model, observed, budget, seed=budget, progress=False)
            for method in args.methods:
                if method == "ours":
                    draws, seconds, chosen = run_ours(task, sims, obs, options)
                else:
                    (draws, seconds), chosen = run_sbi(task, sims, obs, args.sbi_batch), None
                scores = {k: sbibm_tasks.c2st(draws[k], refs[k]) for k in obs}
                row = {"task": task, "budget": budget, "method": method,
                       "options": options if method == "ours" else {},
                       "c2st": scores, "c2st_mean": float(np.mean(list(scores.values()))),
                       "training_s": seconds, "chosen": chosen, "draws": args.draws}
                print(json.dumps(row), flush=True)
                with open(out / "results.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
