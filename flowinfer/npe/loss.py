"""NPE's loss for the generic training loop: the conditional flow's negative log density.

A batch is ``(z, x)``: standardised unconstrained parameters and standardised data. The loss
is ``-mean log q(z | embedding(x))``; the embedding network is trained with the flow.

Example:
    >>> import torch, flowinfer as fi
    >>> flow = fi.build_flow("nsf", dim=2, context_dim=3, num_layers=1, hidden=(8,))
    >>> loss = NPELoss(flow, torch.nn.Linear(4, 3))
    >>> loss((torch.zeros(5, 2), torch.zeros(5, 4))).shape
    torch.Size([])

References:
    Papamakarios & Murray (2016), "Fast epsilon-free inference of simulation models with
    Bayesian conditional density estimation", NeurIPS.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from flowinfer.train import Loss

__all__ = ["NPELoss"]


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
