"""How much the atomic (APT) loss can tell a wrong posterior width from the right one.

Sequential NPE with ``sequential="atomic"`` draws later rounds' parameters from the current
posterior estimate at ``x_o`` and trains with the atomic loss, which scores each pair's
parameters against nine others of the batch. When those atoms lie many posterior widths
from the pair's own posterior (as they do in several dimensions), the softmax is nearly
decided whatever the estimator's width, and the loss carries little information about it.

For ``x ~ N(theta, s^2 I)`` with a flat prior (the posterior is ``N(x, s^2 I)``) and
parameters drawn from the posterior at ``x_o = 0`` (APT's proposal once ``q`` is exact),
this prints, per dimension ``d``, the mean atomic loss of the exact posterior and how much a
posterior 10% too wide raises the atomic loss and the likelihood loss on the same pairs: the
per-pair signal that would correct the error. Exact densities stand in for the flow, so
the figures describe the losses, not any training run.

    python benchmarks/npe_atomic_signal.py
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from torch import nn
from torch.distributions import Normal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowinfer.npe.loss import NUM_ATOMS, AtomicNPELoss, NPELoss  # noqa: E402

NOISE = 0.1
PAIRS = 200_000


class ExactPosterior(nn.Module):
    """``N(x, (width * NOISE)^2 I)``: the exact posterior for ``width = 1``."""

    def __init__(self, width: float) -> None:
        super().__init__()
        self.width = width

    def log_prob(self, z, context):
        return Normal(context, self.width * NOISE).log_prob(z).sum(-1)


def mean_loss(loss, batch, size=250):
    n = batch[0].shape[0]
    return float(torch.stack([loss(tuple(t[i:i + size] for t in batch))
                              for i in range(0, n, size)]).mean())


def main() -> None:
    torch.manual_seed(0)
    print(f"atoms {NUM_ATOMS} (uninformative loss: log {NUM_ATOMS} = {math.log(NUM_ATOMS):.2f})")
    for d in (1, 2, 5, 10):
        theta = NOISE * torch.randn(PAIRS, d)
        x = theta + NOISE * torch.randn(PAIRS, d)
        batch = (theta, x, torch.zeros(PAIRS, d), torch.zeros(PAIRS), torch.zeros(PAIRS))
        atomic = [mean_loss(AtomicNPELoss(ExactPosterior(w), nn.Identity()), batch)
                  for w in (1.0, 1.1)]
        likelihood = [mean_loss(NPELoss(ExactPosterior(w), nn.Identity()), batch[:2])
                      for w in (1.0, 1.1)]
        print(f"d={d:2d}: atomic loss at the posterior {atomic[0]:.3f}; 10% too wide costs "
              f"atomic {atomic[1] - atomic[0]:.4f}, likelihood "
              f"{likelihood[1] - likelihood[0]:.4f} nats per pair")


if __name__ == "__main__":
    main()
