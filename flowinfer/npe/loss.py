"""NPE's losses for the generic training loop: the conditional flow's negative log density,
and the atomic (APT) loss of sequential rounds whose proposal is not the prior.

A batch of :class:`NPELoss` is ``(z, x)``: standardised unconstrained parameters and
standardised data. The loss is ``-mean log q(z | embedding(x))``; the embedding network is
trained with the flow. :class:`AtomicNPELoss` reads four more columns per pair (see there).

Example:
    >>> import torch, flowinfer as fi
    >>> flow = fi.build_flow("nsf", dim=2, context_dim=3, num_layers=1, hidden=(8,))
    >>> loss = NPELoss(flow, torch.nn.Linear(4, 3))
    >>> loss((torch.zeros(5, 2), torch.zeros(5, 4))).shape
    torch.Size([])

References:
    Papamakarios & Murray (2016), "Fast epsilon-free inference of simulation models with
    Bayesian conditional density estimation", NeurIPS. Greenberg, Nonnenmacher & Macke
    (2019), "Automatic posterior transformation for likelihood-free inference", ICML.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from flowinfer.checks import check_int
from flowinfer.train import Loss

__all__ = ["NPELoss", "AtomicNPELoss", "NUM_ATOMS"]

#: Atoms per pair in the atomic loss (the pair's own parameters and 9 others); Greenberg et
#: al. (2019) and sbi use 10.
NUM_ATOMS = 10


class NPELoss(Loss):
    """``-mean log q(z | embedding(x))`` over a batch ``(z, x)``.

    Args:
        flow: a conditional :class:`~flowinfer.flow.Flow` over the standardised latents.
        embedding: the network mapping standardised data to the flow's context.
    """

    def __init__(self, flow: nn.Module, embedding: nn.Module) -> None:
        self.flow, self.embedding = flow, embedding
        self.modules = [flow, embedding]

    def __call__(self, batch: Any) -> Tensor:
        z, x = batch
        return -self.flow.log_prob(z, self.embedding(x)).mean()


class AtomicNPELoss(NPELoss):
    """The atomic APT loss, plus the likelihood of the pairs drawn from the prior.

    With parameters drawn from a proposal ``pi`` that is not the prior, maximum likelihood
    learns ``p(theta | x) pi(theta) / p(theta)``, not the posterior. The atomic loss instead
    scores each pair's parameters against ``M - 1`` others of the batch (the atoms, i.i.d.
    draws of the same proposal mixture, independent of the pair's data):

        ``-log [r(theta_i | x_i) / sum_j r(theta_j | x_i)]``, ``r = q(theta | x) / p(theta)``,

    whose minimiser over ``q`` is the posterior wherever ``pi`` has mass, for any ``pi``
    (Greenberg et al. 2019, Prop. 1; the softmax only compares atoms, so a ``pi`` that cuts
    the posterior does not teach a cut density). Pairs drawn from the prior also contribute
    ``-log q(theta_i | x_i)``, consistent as well, which keeps ``q`` right away from the
    proposals. Per pair the flow is evaluated ``M`` times.

    A batch is ``(z, x, offset, log_prior, from_prior)``: flow-space latents, standardised
    data, the flow-space offset of each pair's data (the regression standardiser's
    ``-prediction / scale``; zeros without it: atom ``j`` in pair ``i``'s flow space is
    ``z_j - offset_j + offset_i``), the prior log density of each pair's unconstrained
    latents (its constant Jacobian to flow space cancels in the softmax) and 1.0 for pairs
    from the prior. The atoms of pair ``i`` are the batch's rows ``i+1 .. i+M-1`` (cyclic):
    the loop shuffles training batches, and a fixed validation order keeps the validation
    loss deterministic.

    Args:
        flow, embedding: as for :class:`NPELoss`.
        num_atoms: ``M``, atoms per pair (fewer when the batch is smaller).

    Example:
        >>> import torch, flowinfer as fi
        >>> flow = fi.build_flow("nsf", dim=2, context_dim=3, num_layers=1, hidden=(8,))
        >>> loss = AtomicNPELoss(flow, torch.nn.Linear(4, 3), num_atoms=3)
        >>> z, x = torch.randn(6, 2), torch.randn(6, 4)
        >>> batch = (z, x, torch.zeros(6, 2), torch.zeros(6), torch.ones(6))
        >>> bool(torch.isfinite(loss(batch)))
        True
    """

    def __init__(self, flow: nn.Module, embedding: nn.Module,
                 num_atoms: int = NUM_ATOMS) -> None:
        super().__init__(flow, embedding)
        self.num_atoms = check_int(num_atoms, "num_atoms")

    def __call__(self, batch: Any) -> Tensor:
        z, x, offset, log_prior, from_prior = batch
        n, dim = z.shape
        m = min(self.num_atoms, n)
        idx = (torch.arange(n, device=z.device)[:, None]
               + torch.arange(m, device=z.device)[None]) % n          # column 0: the pair
        atoms = (z - offset)[idx] + offset[:, None]                        # (n, m, dim)
        context = self.embedding(x)
        log_q = self.flow.log_prob(atoms.reshape(n * m, dim),
                                   context.repeat_interleave(m, 0)).reshape(n, m)
        logits = log_q - log_prior[idx]
        atomic = torch.logsumexp(logits, 1) - logits[:, 0]
        return (atomic - from_prior * log_q[:, 0]).mean()
