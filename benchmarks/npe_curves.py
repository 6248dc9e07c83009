"""Validation-loss curves of the default NPE's members on one sbibm task and budget.

Trains ``fi.NPE(model, observed="x")`` (library defaults, seed 0) and prints, for each
``"auto"`` member, how many epochs ran, the epoch of the best validation loss, that loss and
the loss every fifth epoch, then the mixture weights: a best epoch far before the last with
the loss rising after it means the fit is limited by its estimation error at that budget
(more pairs, or fewer parameters, help; more epochs do not).

    python benchmarks/npe_curves.py --task gaussian_linear_uniform --simulations 10000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sbi import TASKS  # noqa: E402

import flowinfer as fi  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="gaussian_linear_uniform", choices=list(TASKS))
    parser.add_argument("--simulations", type=int, default=10_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, _ = TASKS[args.task]
    torch.manual_seed(0)
    npe = fi.NPE(model, observed="x", constant_data="keep")
    start = time.perf_counter()
    npe.fit(num_simulations=args.simulations, seed=0, progress=False)
    print(f"{args.task}, {args.simulations} simulations: trained in "
          f"{time.perf_counter() - start:.0f} s")
    for label, result in zip(npe.selection["candidates"], npe.selection["results"],
                             strict=True):
        val = np.array(result.history["val_loss"])
        print(f"{label}: {len(val)} epochs, best {int(val.argmin()) + 1} "
              f"({val.min():.4f}); every fifth: {np.round(val[::5], 3).tolist()}")
    print("mixture weights", np.round(npe.selection["weights"], 3).tolist())


if __name__ == "__main__":
    main()
