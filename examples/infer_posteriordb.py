"""Fit a real posteriordb posterior with ``fi.infer`` and look at it with ArviZ.

The posterior is ``eight_schools-eight_schools_noncentered`` (a hierarchical model of eight
coaching effects) from ``../shared/data/posteriordb``; the script compares ``fi.infer``'s
posterior means and sds with the Stan reference draws and writes three ArviZ figures
(posterior, forest plot against the reference, posterior predictive check) to ``out/``.

    OMP_NUM_THREADS=1 python examples/infer_posteriordb.py [--posterior NAME] [--out out]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import posteriordb_models as pdb  # noqa: E402

import flowinfer as fi  # noqa: E402


def _reference_idata(reference: dict[str, np.ndarray]):
    """The reference draws ``{"theta[1]": draws, ...}`` as one-chain InferenceData."""
    import arviz as az

    sites: dict[str, list[np.ndarray]] = {}
    for name, draws in reference.items():
        sites.setdefault(name.partition("[")[0], []).append(draws)
    return az.from_dict(posterior={k: (np.stack(v, -1) if len(v) > 1 else v[0])[None]
                                   for k, v in sites.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posterior", default="eight_schools-eight_schools_noncentered",
                        choices=pdb.POSTERIORS)
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.set_default_dtype(torch.float64)
    try:
        post = pdb.load(args.posterior)
    except FileNotFoundError as e:
        sys.exit(f"{e}: this example needs the shared posteriordb data")

    idata = fi.infer(post.model, *post.args, posterior_predictive=True, seed=args.seed,
                     report=True)
    print(az.summary(idata, var_names=["mu", "tau"], kind="stats"))
    print(az.loo(idata))

    # fi.infer against the Stan reference, per coordinate, in reference sds.
    names, ref = post.reference_matrix()
    samples = {k: torch.as_tensor(idata.posterior[k].values.reshape(
        (-1,) + idata.posterior[k].shape[2:])) for k in idata.posterior.data_vars}
    draws = pdb.flatten_draws(samples, names)
    err = np.abs(draws.mean(0) - ref.mean(0)) / ref.std(0)
    print(f"largest |mean - reference| / reference sd: {err.max():.3f}")

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.posterior.split("-")[0]
    az.plot_posterior(idata, var_names=["mu", "tau"])
    plt.savefig(args.out / f"infer_{stem}_posterior.png", dpi=100)
    reference = _reference_idata(post.reference)
    var_names = [v for v in reference.posterior.data_vars if v in idata.posterior]
    az.plot_forest([idata, reference], model_names=["fi.infer", "Stan reference"],
                   var_names=var_names, combined=True)
    plt.savefig(args.out / f"infer_{stem}_forest.png", dpi=100)
    az.plot_ppc(idata, num_pp_samples=100)
    plt.savefig(args.out / f"infer_{stem}_ppc.png", dpi=100)
    plt.close("all")
    print(f"figures written to {args.out}/infer_{stem}_*.png")


if __name__ == "__main__":
    main()
