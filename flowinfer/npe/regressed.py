"""Regressed mixture members (``standardize="mixed"``): half of the ``"auto"`` mixture's
members model the latents' residual after a ridge regression on the data.

``standardize="regression"`` standardises every member's latents given the data by one
ridge regression (:class:`~flowinfer.npe.standardize.RegressionStandardizer`): much better
moments where the posterior's location is near-linear in the data, worse where it is not
(bounded latents, strongly nonlinear simulators). ``"mixed"`` keeps both: the second copy
of each ``"auto"`` candidate gets its own regression head, the first stays on the prior's
scale, and the mixture's weights (fitted on the validation pairs,
:mod:`flowinfer.npe.mixture`) put the mass on whichever describes the posterior better
there. It costs no more training than the default (the same number of members).

A regressed member is a pair of wrappers so the mixture and the losses stay unchanged:
:class:`DataBeside` appends the regression features (the standardised data, pooled over
trial axes) to the member's embedding, and :class:`RegressedFlow` splits them off again,
``log q(z | x) = log q_inner((z - a - B g(x)) / s | e(x), l(x)) - sum log s``, where ``g(x)``
is ``f(x)`` and, for latents with a bounded support, ``l(x)``: their predicted location in
the flow's space (:class:`~flowinfer.npe.bounded.SupportLocation`), which is not linear in
the data near the bounds. The inner flow reads ``l(x)`` beside the embedding (``located``
of them), so it can bend the residual's shape where a posterior meets a bound.

Example:
    >>> import torch, flowinfer as fi
    >>> inner = fi.build_flow("nsf", dim=2, context_dim=3, num_layers=1, hidden=(8,))
    >>> flow = RegressedFlow(inner, num_features=4)
    >>> embedding = DataBeside(torch.nn.Linear(4, 3))
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(500, 4, generator=g)
    >>> z = x[:, :2] + 0.1 * torch.randn(500, 2, generator=g)
    >>> flow.fit_head(z, x)
    >>> [round(float(s), 1) for s in flow.head.scale]
    [0.1, 0.1]
    >>> flow.log_prob(z[:3], embedding(x[:3])).shape
    torch.Size([3])

References:
    Lakshminarayanan, Pritzel & Blundell (2017), "Simple and scalable predictive
    uncertainty estimation using deep ensembles", NeurIPS (members of a mixture).
    Golub, Heath & Wahba (1979), "Generalized cross-validation as a method for choosing a
    good ridge parameter", Technometrics (the head's penalty).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowinfer.npe.bounded import SupportLocation
from flowinfer.npe.standardize import RegressionStandardizer, regression_features

__all__ = ["DataBeside", "RegressedFlow", "num_regression_features", "TAIL_LIMIT"]

#: A member's residual scale is at least the 99% quantile of its absolute training
#: residuals divided by this. Where the posterior's location is nonlinear in the data
#: (bounded latents near their bounds), residuals over the least-squares scale were
#: heavy-tailed: 0.4-0.7% beyond 5, where the spline (box [-5, 5]) is the identity and
#: gives them the base's Gaussian tail (dev notes, fourteenth session).
TAIL_LIMIT = 3.0


def num_regression_features(data_shape: Sequence[int], pool: Sequence[int] = ()) -> int:
    """How many regression features data shaped ``data_shape`` gives after pooling."""
    return int(regression_features(torch.zeros(1, *data_shape), pool).shape[-1])


class DataBeside(nn.Module):
    """``x -> cat(embedding(x), regression_features(x, pool))``.

    Args:
        embedding: the member's embedding network.
        pool: the data axes averaged into the features (the embedding's trial axes).
    """

    def __init__(self, embedding: nn.Module, pool: Sequence[int] = ()) -> None:
        super().__init__()
        self.inner = embedding
        self.pool = tuple(int(p) for p in pool)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.inner(x), regression_features(x, self.pool)], dim=-1)


class RegressedFlow(nn.Module):
    """A conditional flow on ``(z - prediction(f)) / scale``, the context being
    ``cat(e(x), f)`` with ``f`` the ``num_features`` regression features (see
    :class:`DataBeside`).

    Args:
        inner: the conditional flow of the residual (its context: the embedding's output,
            then the ``located`` location features).
        num_features: the number of regression features at the end of the context.
        head: the fitted regression (default: the identity until :meth:`fit_head`).
        location: the bounded latents' fitted location features (see :meth:`fit_head`).
        located: how many location features the inner flow reads (0, or the number of
            bounded latent coordinates); they are zero until a location is fitted.
    """

    def __init__(self, inner: nn.Module, num_features: int,
                 head: RegressionStandardizer | None = None,
                 location: SupportLocation | None = None, located: int = 0) -> None:
        super().__init__()
        self.inner = inner
        self.num_features = int(num_features)
        self.located = int(located)
        if not 0 <= self.located <= inner.context_dim:
            raise ValueError(f"located must be between 0 and the inner flow's context size "
                             f"{inner.context_dim}, got {located}")
        self.dim = inner.dim
        # The inner flow reads the embedding and the location features, not the regression
        # features: giving it those as well was worse on slcp (dev notes, fourteenth
        # session); the location features gave more held-out density on average
        # (eighteenth session, docs/npe.md "Regressed members").
        self.context_dim = inner.context_dim - self.located + self.num_features
        self.head = head if head is not None else RegressionStandardizer.identity(inner.dim)
        self.location = location
        # A trained member keeps its head: fitting it again would move its target.
        self.head_fitted = head is not None

    @property
    def config(self) -> dict:
        return {"name": "regressed " + self.inner.config["name"]}

    def fit_head(self, z: Tensor, features: Tensor,
                 location: SupportLocation | None = None) -> None:
        """Fit the regression of ``z`` ``(N, dim)`` on ``features`` ``(N, num_features)``
        (the training pairs only: the validation loss must not see pairs it was fitted on),
        and on the bounded latents' predicted locations when ``location`` (fitted on the
        same pairs) is given.
        """
        if location is not None and self.located not in (0, location.low.numel()):
            raise ValueError(f"the inner flow reads {self.located} location features, the "
                             f"location predicts {location.low.numel()}")
        self.location = location
        features = features.detach()
        head = RegressionStandardizer.fit(
            z.detach(), self._head_features(features, self._locate(features)),
            tail_limit=TAIL_LIMIT)
        self.head = head.to(z.device)
        self.head_fitted = True

    def _locate(self, features: Tensor) -> Tensor | None:
        return None if self.location is None else self.location(features)

    @staticmethod
    def _head_features(features: Tensor, location: Tensor | None) -> Tensor:
        return features if location is None else torch.cat([features, location], dim=-1)

    def prediction(self, features: Tensor) -> Tensor:
        """The head's prediction of ``z`` from ``(..., num_features)`` features."""
        return self.head.predict(self._head_features(features, self._locate(features)))

    def _split(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """The inner flow's context and the head's prediction of ``z``, from ``context``
        (the location features computed once for both)."""
        embedded, features = context.split(
            [self.inner.context_dim - self.located, self.num_features], dim=-1)
        location = self._locate(features)
        if self.located:
            embedded = torch.cat([embedded, location if location is not None else
                                  features.new_zeros(features.shape[:-1] + (self.located,))],
                                 dim=-1)
        return embedded, self.head.predict(self._head_features(features, location))

    def log_prob(self, z: Tensor, context: Tensor) -> Tensor:
        embedded, predicted = self._split(context)
        residual = (z - predicted) / self.head.scale
        return self.inner.log_prob(residual, embedded) + self.head.log_abs_det()

    @torch.no_grad()
    def sample(self, sample_shape: Sequence[int] | torch.Size = (),
               context: Tensor | None = None) -> Tensor:
        """Draws of shape ``sample_shape + context's batch shape + (dim,)``."""
        embedded, predicted = self._split(context)
        residual = self.inner.sample(sample_shape, context=embedded)
        return residual * self.head.scale + predicted
