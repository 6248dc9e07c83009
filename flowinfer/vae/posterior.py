"""``AmortizedFlowPosterior`` is the IAF posterior of Kingma et al. (2016): the encoder gives a
diagonal Gaussian ``N(loc(x), scale(x))`` and a context vector ``h(x)``; a conditional flow
(inverse autoregressive by default, one pass to sample and to score its own samples) maps the
Gaussian draw to ``z``. It is a plain ``nn.Module`` returning a Pyro distribution, so it is
used as the guide's distribution for ``z`` inside the data plate.

``iwae_bound`` evaluates the importance-weighted bound of Burda et al. (2016) per data point
for any model/guide pair whose latent variables all live inside the data plate.
"""

from __future__ import annotations

from typing import Any

import pyro.distributions as dist
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from flowinfer.checks import check_int
from flowinfer.flow import Flow
from flowinfer.registry import build_flow
from flowinfer.transforms.base import check_context, check_event

__all__ = ['AmortizedFlowPosterior']


_MIN_SCALE = 1e-6


class AmortizedFlowPosterior(nn.Module):
    """``q(z | x)``: a conditional flow on top of the encoder's diagonal Gaussian.

    ``z0 ~ N(loc, scale)``, ``z = T_K(... T_1(z0; h); h)`` with ``h`` the encoder's context.
    The flow starts at the identity, so before training ``q`` equals the encoder's Gaussian
    (a standard VAE posterior); training bends it where the true posterior is not Gaussian.

    Args:
        dim: latent dimension.
        context_dim: size of the encoder's context vector ``h`` (0: the flow is shared by all
            data points and only the Gaussian is amortized).
        flow: a registered flow name with context support (default ``"iaf"``: one pass for
            ``rsample`` and for ``log_prob`` of its own samples, which is all a guide needs).
        **hyper: hyper-parameters for ``fi.build_flow`` (``num_layers``, ``hidden``, ...).

    Attributes:
        num_features: ``2 * dim + context_dim``, the encoder output size that
            :meth:`from_features` splits into ``(loc, raw scale, context)``.

    Example:
        >>> import pyro
        >>> q = AmortizedFlowPosterior(dim=2, context_dim=4, num_layers=2, hidden=(16,))
        >>> encoder = torch.nn.Linear(6, q.num_features)
        >>> x = torch.randn(5, 6)
        >>> def guide(x):
        ...     pyro.module("encoder", encoder)
        ...     pyro.module("posterior", q)
        ...     with pyro.plate("data", x.shape[0]):
        ...         return pyro.sample("z", q.from_features(encoder(x)))
        >>> guide(x).shape
        torch.Size([5, 2])

    References:
        Kingma et al. (2016), "Improved Variational Inference with Inverse Autoregressive
        Flow". Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows".
    """

    def __init__(self, dim: int, context_dim: int = 0, flow: str = "iaf", **hyper: Any) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim")
        self.context_dim = check_int(context_dim, "context_dim", 0)
        if not isinstance(flow, str):
            raise TypeError(f"flow must be a registered flow name, got {type(flow).__name__}")
        self.flow: Flow = build_flow(flow, dim, context_dim=context_dim, **hyper)
        self.num_features = 2 * dim + context_dim

    def _check(self, loc: Tensor, scale: Tensor | float, context: Tensor | None) -> None:
        check_event(loc, self.dim, "loc")
        if isinstance(scale, Tensor):
            try:
                torch.broadcast_shapes(scale.shape, loc.shape)
            except RuntimeError:
                raise ValueError(
                    f"scale must broadcast with loc {tuple(loc.shape)}, got "
                    f"{tuple(scale.shape)}"
                ) from None
        check_context(context, self.context_dim, "posterior")

    def forward(
        self, loc: Tensor, scale: Tensor | float, context: Tensor | None = None
    ) -> dist.TransformedDistribution:
        """The posterior for a batch: ``batch_shape == loc.shape[:-1]``, event ``(dim,)``."""
        self._check(loc, scale, context)
        base = dist.Normal(loc, scale).to_event(1)
        return dist.TransformedDistribution(base, self.flow.transforms(context))

    def split_features(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Split encoder output ``(..., num_features)`` into ``(loc, scale, context)``.

        The scale is ``softplus(raw) + 1e-6``; the context is ``None`` when
        ``context_dim == 0``.
        """
        if not isinstance(features, Tensor):
            raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
        if features.dim() == 0 or features.shape[-1] != self.num_features:
            raise ValueError(
                f"features must be a tensor of shape (..., {self.num_features}) "
                f"(2 * dim + context_dim), got {tuple(features.shape)}"
            )
        d = self.dim
        loc, raw, context = features[..., :d], features[..., d : 2 * d], features[..., 2 * d :]
        scale = F.softplus(raw) + _MIN_SCALE
        return loc, scale, (context if self.context_dim else None)

    def from_features(self, features: Tensor) -> dist.TransformedDistribution:
        """The posterior from one encoder output of size :attr:`num_features`."""
        return self(*self.split_features(features))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}"
