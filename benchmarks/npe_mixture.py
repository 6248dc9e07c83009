"""Would mixing the two ``embedding="auto"`` candidates beat keeping the better one?

``"auto"`` trains an MLP embedding that passes the data beside its features and one that
does not, on the same simulations and split; ``combine="best"`` keeps the one with the
lower validation loss. Runs that differ only in their initialisation differ by 0.1-0.3
nats of held-out density at 1,000 simulations, so the two candidates' errors may be partly
independent, and the mixture ``w q_skip + (1 - w) q_noskip`` (``w`` fitted on the same
validation split that picks the winner; ``w`` in {0, 1} is ``"best"``'s choice) could be
closer to the posterior than either. This script measured it before ``combine="mixture"``
was built (NPE's default now): held-out ``-log q(theta | x)`` on 20,000 fresh simulations
(``benchmarks/npe_heldout.py`` explains the score) for the kept candidate, the fitted
mixture and the equal mixture, with paired standard errors of the differences to the kept
candidate.

    python benchmarks/npe_mixture.py --budgets 1000 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from npe_heldout import MODELS, capped, common_arguments, heldout_nll, paired  # noqa: E402

import flowinfer as fi  # noqa: E402
from flowinfer.npe.options import DEFAULT_TRAINING  # noqa: E402
from flowinfer.npe.training import training_tensors  # noqa: E402


def _mixture_nll(nll_a: torch.Tensor, nll_b: torch.Tensor, w: float) -> torch.Tensor:
    if w in (0.0, 1.0):
        return nll_a if w == 1.0 else nll_b
    return -torch.logaddexp(math.log(w) - nll_a, math.log1p(-w) - nll_b)


def run(name: str, budget: int, seed: int, test_size: int) -> dict:
    model, observed, latents = MODELS[name]
    sims = fi.simulate(model, observed, budget, seed=seed, progress=False,
                       latent_names=latents)
    test = fi.simulate(model, observed, test_size, seed=10_000 + seed, progress=False,
                       latent_names=latents)
    fitted = []
    for skip in (True, False):
        torch.manual_seed(seed)
        npe = fi.NPE(model, observed=observed, latents=latents, constant_data="keep",
                     embedding="mlp", embedding_options={"skip": skip})
        npe.fit(simulations=sims, seed=seed, progress=False)
        fitted.append(npe)
    # The validation rows of the training loop: the same seeded permutation.
    n = training_tensors(fitted[0], sims)[0].shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val = order[:max(1, round(n * DEFAULT_TRAINING["val_fraction"]))]
    val_nll = [heldout_nll(npe, sims)[val] for npe in fitted]
    test_nll = [heldout_nll(npe, test) for npe in fitted]
    grid = [i / 100 for i in range(101)]
    w = min(grid, key=lambda v: float(_mixture_nll(*val_nll, v).mean()))
    kept = 1.0 if float(val_nll[0].mean()) <= float(val_nll[1].mean()) else 0.0
    base = capped(_mixture_nll(*test_nll, kept))
    row = {"model": name, "budget": budget, "seed": seed, "weight_skip": w,
           "kept": "skip" if kept else "noskip"}
    for label, weight in (("kept", kept), ("fitted", w), ("equal", 0.5)):
        scores = paired(capped(_mixture_nll(*test_nll, weight)), base)
        row.update({f"{label}_{key}": value for key, value in scores.items()})
    print(f"{name} {budget} seed {seed}: kept {row['kept']} nll {row['kept_nll']:.3f}; "
          f"fitted w={w:.2f} {row['fitted_diff']:+.3f} +- {row['fitted_diff_se']:.3f}; equal "
          f"{row['equal_diff']:+.3f} +- {row['equal_diff_se']:.3f}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for budget in args.budgets:
        for seed in args.seeds:
            for name in args.models:
                row = run(name, budget, seed, args.test_size)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
