"""Held-out density of NPE with and without the bounded latents' location features.

For latents whose support has a bound (a box, a half-line), each regressed member of the
default mixture gets the latent's predicted location in the flow's space
(``flowinfer.npe.bounded.SupportLocation``): its regression head reads it (seventeenth
session), and its inner flow reads it beside the embedding (eighteenth session). The
features are not an ``fi.NPE`` option, so this ablation switches them off inside the
library, on the same simulations, seed and held-out pairs as the default:

* ``none``: neither (``training.bounded_sites`` patched to find no bounded site);
* ``head``: the head only (the inner flows built without the location context);
* ``default``: both.

It prints ``npe_heldout.py``'s scores (mean held-out ``-log q`` in nats, and each variant's
paired difference to the first with its standard error) per model, budget and seed.

    python benchmarks/npe_location.py --models gaussian_mixture two_moons --budgets 1000 --seeds 0 1

Models: ``npe_heldout.py``'s; a model without bounded latents gives three equal rows.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from npe_heldout import common_arguments, fit_and_score, paired, test_pairs  # noqa: E402

import flowinfer.npe.estimator as estimator  # noqa: E402
import flowinfer.npe.training as training  # noqa: E402

VARIANTS = ("none", "head", "default")


@contextmanager
def location_features(variant: str):
    """Within the block, NPEs are built and trained with ``variant``'s features."""
    candidates, sites = estimator.embedding_candidates, training.bounded_sites
    if variant in ("none", "head"):
        estimator.embedding_candidates = lambda *a, **kw: candidates(*a, **{**kw, "located": 0})
    if variant == "none":
        training.bounded_sites = lambda info: []
    try:
        yield
    finally:
        estimator.embedding_candidates, training.bounded_sites = candidates, sites


def run(name: str, budget: int, variants: list[str], seed: int, test_size: int) -> list[dict]:
    test = test_pairs(name, seed, test_size)
    rows, base = [], None
    for variant in variants:
        with location_features(variant):
            npe, nll, seconds = fit_and_score(name, budget, seed, test)
        base = nll if base is None else base
        row = {"model": name, "budget": budget, "seed": seed, "variant": variant,
               **paired(nll, base), "seconds": seconds,
               "weights": (npe.selection or {}).get("weights")}
        rows.append(row)
        print(f"{name} {budget} seed {seed} {variant}: nll {row['nll']:.3f} "
              f"diff {row['diff']:+.3f} +- {row['diff_se']:.3f} ({seconds:.0f} s)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="the first is the baseline of the differences")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.models:
        for budget in args.budgets:
            for seed in args.seeds:
                rows = run(name, budget, args.variants, seed, args.test_size)
                if args.out:
                    with open(args.out, "a") as f:
                        f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
