"""Z-scoring of simulated parameters and data, with a clear error for constant columns.

Example:
    >>> import torch
    >>> z = Standardizer.fit(torch.tensor([[0.0, 1.0], [2.0, 3.0]]), name="data")
    >>> z(torch.tensor([[1.0, 2.0]]))
    tensor([[0., 0.]])
    >>> Standardizer.fit(torch.tensor([[0.0, 1.0], [2.0, 1.0]]), name="data")
    Traceback (most recent call last):
        ...
    ValueError: data column(s) [1] are constant over all 2 simulations (value 1.0), ...

References:
    Lueckmann et al. (2021), "Benchmarking Simulation-Based Inference", AISTATS (z-scoring
    of parameters and data as part of every neural estimator).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Standardizer", "RegressionStandardizer", "PairScaling", "regression_features"]

_CHOICES = ("error", "keep")


class Standardizer(nn.Module):
    """``(x - mean) / std`` with statistics over the draws (and optionally pooled axes).

    Args:
        mean: the mean, shaped like one draw (or broadcastable to it).
        std: the standard deviation, same shape.
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @classmethod
    def fit(cls, x: Tensor, name: str = "data", pool: Sequence[int] = (),
            constant: str = "error", labels: Sequence[str] | None = None) -> Standardizer:
        """Statistics of ``x`` (draws along dim 0).

        Args:
            x: ``(N, *shape)`` draws.
            name: what ``x`` is, for the message.
            pool: axes of one draw (0 = first axis after the draws) whose entries share one
                mean and std, e.g. the trial axis of i.i.d. trials or the time axis.
            constant: ``"error"`` raises for a column with zero spread; ``"keep"`` leaves
                such columns centred but unscaled.
            labels: optional names of the flattened columns, for the message.

        Raises:
            ValueError: a column is constant (``constant="error"``), or fewer than 2 draws.
        """
        if constant not in _CHOICES:
            raise ValueError(f"constant_data must be one of {_CHOICES}, got {constant!r}")
        if x.shape[0] < 2:
            raise ValueError(f"{name}: need at least 2 simulations to standardise, got "
                             f"{x.shape[0]}")
        x = x.to(torch.get_default_dtype()) if not x.is_floating_point() else x
        dims = (0, *(1 + int(p) for p in pool))
        mean = x.mean(dim=dims, keepdim=True)[0]
        std = x.std(dim=dims, keepdim=True)[0]
        # A column whose spread is lost in rounding is as constant as an exact one.
        flat_std, flat_mean = std.reshape(-1), mean.reshape(-1)
        tiny = flat_std <= 1e-6 * flat_mean.abs().clamp_min(1e-12)
        if tiny.any():
            if constant == "error":
                cols = tiny.nonzero().flatten().tolist()
                shown = [labels[c] for c in cols] if labels is not None else cols
                value = float(flat_mean[cols[0]])
                raise ValueError(
                    f"{name} column(s) {shown[:10]} are constant over all {x.shape[0]} "
                    f"simulations (value {value}), so they cannot be standardised; they "
                    "carry no information about the parameters: drop them from the model's "
                    'observed site, or pass constant_data="keep" to leave them unscaled'
                )
            flat_std = torch.where(tiny, torch.ones_like(flat_std), flat_std)
            std = flat_std.reshape(std.shape)
        return cls(mean, std)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def inverse(self, z: Tensor) -> Tensor:
        """Undo the standardisation."""
        return z * self.std + self.mean

    def log_abs_det(self) -> Tensor:
        """``log|d z / d x|`` of one draw, summed over its entries (a constant)."""
        return -torch.log(self.std).sum()


class RegressionStandardizer(nn.Module):
    """``z -> (z - (a + B x)) / s``: latents standardised given the data by a ridge regression
    (NPE's ``standardize="regression"``).

    With latents z-scored by the prior a posterior is usually much narrower than the flow's
    unit-scale base and moves with the data. A spline flow is the identity outside its box;
    asked for a target a third as wide, it puts the base's tails far out in the target's
    units (kurtosis 3.8-6.8 on a conjugate Gaussian where 3 is exact) and leaves location
    errors of 0.12-0.15 posterior sd (``benchmarks/npe_tails.py``). Subtracting a linear
    prediction from the (standardised) data and dividing by the residual sd gives the flow
    a unit-scale target where the posterior's location is near-linear in the data. Where
    it is not (bounded latents, whose unconstrained posteriors have long tails at the box's
    edges; strongly nonlinear simulators) the residuals divided by ``s`` reach beyond the
    spline's box and the posterior gets worse, which is why NPE's default regresses only
    half of its members and lets the mixture weigh them (``standardize="mixed"``,
    docs/npe.md).

    The ridge penalty is chosen for each latent by generalised cross-validation among the
    penalties that leave at least ``ROWS_PER_FEATURE`` simulations per effective degree of
    freedom: a prediction with ``k`` degrees of freedom fitted on ``n`` pairs errs by about
    ``k / n`` of the residual variance on new data, which the flow, trained on the fitted
    pairs, would not see (it would be over-confident by that much). So many features and
    few simulations give a strongly shrunk regression rather than none (100 binary data
    columns and 1,000 simulations: docs/npe.md). The data are clipped to the range seen in
    the simulations before the prediction, so an observation outside it does not move the
    prediction further.

    Args:
        coef: ``(p, d)`` regression coefficients; ``intercept``: ``(d,)``; ``scale``: ``(d,)``
            residual sds; ``low``, ``high``: ``(p,)`` the features' range in the fit.
        pool: data axes averaged into the features (see :func:`regression_features`).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(2000, 3, generator=g)
        >>> z = x[:, :1] + 0.1 * torch.randn(2000, 1, generator=g)
        >>> head = RegressionStandardizer.fit(z, x)
        >>> round(float(head.scale[0]), 2), round(float(head(z, x).std()), 2)
        (0.1, 1.0)

    References:
        Golub, Heath & Wahba (1979), "Generalized cross-validation as a method for choosing
        a good ridge parameter", Technometrics.
    """

    #: Ridge penalties tried, relative to the mean squared singular value of the features;
    #: ``inf`` is no regression at all (a prediction of the mean).
    PENALTIES = (1e-6, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, float("inf"))
    #: Above this many features the regression is not fitted (the SVD would cost more than
    #: it is likely to give); the standardiser is then the identity.
    MAX_FEATURES = 1024
    #: Simulations per effective degree of freedom of the fit, at least (the prediction's
    #: error on new data is then at most 5% of the residual variance).
    ROWS_PER_FEATURE = 20

    def __init__(self, coef: Tensor, intercept: Tensor, scale: Tensor, low: Tensor,
                 high: Tensor, pool: Sequence[int] = ()) -> None:
        super().__init__()
        for name, value in (("coef", coef), ("intercept", intercept), ("scale", scale),
                            ("low", low), ("high", high)):
            self.register_buffer(name, value)
        self.pool = tuple(int(p) for p in pool)

    @classmethod
    def identity(cls, dim: int) -> RegressionStandardizer:
        """No regression: ``z`` passes unchanged (what NPE's ``standardize="prior"`` uses)."""
        dtype = torch.get_default_dtype()
        empty = torch.zeros(0, dtype=dtype)
        return cls(torch.zeros(0, dim, dtype=dtype), torch.zeros(dim, dtype=dtype),
                   torch.ones(dim, dtype=dtype), empty, empty)

    @classmethod
    def fit(cls, z: Tensor, x: Tensor, pool: Sequence[int] = (), max_rows: int = 50_000,
            tail_limit: float | None = None) -> RegressionStandardizer:
        """Fit on ``N`` pairs: ``z`` ``(N, d)`` standardised latents, ``x`` ``(N, *shape)``
        standardised data (at most ``max_rows`` of them, taken evenly, enter the fit).

        ``tail_limit``: if given, each latent's scale is raised until the 99% quantile of
        its absolute residuals in scale units is at most this (a Gaussian's is 2.58), so
        heavy-tailed residuals do not leave the flow's spline box.
        """
        features = regression_features(x, pool)
        n, p = features.shape
        if p == 0 or p > cls.MAX_FEATURES:
            return cls.identity(z.shape[-1])
        step = max(1, n // max_rows)
        f, t = features[::step].double(), z[::step].double()
        f_mean, t_mean = f.mean(0), t.mean(0)
        u, sv, vh = torch.linalg.svd(f - f_mean, full_matrices=False)
        proj = u.T @ (t - t_mean)                                           # (k, d)
        rows = f.shape[0]
        base = float((sv**2).mean()) or 1.0
        # Each penalty's shrinkage of the k singular directions, then its residuals and
        # generalised cross-validation score per latent; the best penalty per latent wins.
        shrink = torch.stack([torch.zeros_like(sv) if penalty == float("inf")
                              else sv**2 / (sv**2 + penalty * base)
                              for penalty in cls.PENALTIES])                 # (P, k)
        rss = torch.stack([((t - t_mean - u @ (s[:, None] * proj)) ** 2).sum(0)
                           for s in shrink])                                # (P, d)
        dof = shrink.sum(1)                                                 # (P,)
        gcv = rss / rows / (1.0 - dof / rows).clamp_min(1e-3)[:, None] ** 2
        # No regression (the infinite penalty, 0 degrees of freedom) is always allowed.
        allowed = dof * cls.ROWS_PER_FEATURE <= rows
        best = gcv.masked_fill(~allowed[:, None], float("inf")).argmin(0)   # (d,)
        coef = vh.T @ ((shrink[best] / sv.clamp_min(1e-12)).T * proj)       # (p, d)
        scale = (rss.gather(0, best[None])[0] / (rows - dof[best]).clamp_min(1.0)).sqrt()
        dtype = z.dtype
        # A latent the data fix exactly would give a zero scale; 1e-4 of the prior's keeps
        # the map invertible in single precision.
        scale = scale.clamp_min(1e-4)
        intercept = t_mean - f_mean @ coef
        if tail_limit is not None:
            residual = (t - f @ coef - intercept).abs().quantile(0.99, dim=0)
            scale = torch.maximum(scale, residual / tail_limit)
        return cls(coef.to(dtype), intercept.to(dtype), scale.to(dtype),
                   features.min(0).values.to(dtype), features.max(0).values.to(dtype), pool)

    def prediction(self, x: Tensor) -> Tensor:
        """``(N, d)`` predicted latents for ``(N, *shape)`` standardised data."""
        return self.predict(regression_features(x, self.pool))

    def predict(self, features: Tensor) -> Tensor:
        """``(..., d)`` predicted latents for ``(..., p)`` features, clipped first to their
        range in the fit."""
        if self.coef.shape[0] == 0:
            return self.intercept.expand(*features.shape[:-1], -1)
        return torch.minimum(torch.maximum(features, self.low), self.high) @ self.coef \
            + self.intercept

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        """``(z - prediction(x)) / scale``; ``z`` ``(..., N, d)`` broadcasts against ``x``'s
        ``N`` draws (one draw ``(d,)`` against one data set)."""
        return (z - self._aligned(z, x)) / self.scale

    def inverse(self, e: Tensor, x: Tensor) -> Tensor:
        """Undo :meth:`forward`."""
        return e * self.scale + self._aligned(e, x)

    def _aligned(self, z: Tensor, x: Tensor) -> Tensor:
        prediction = self.prediction(x)
        return prediction[0] if z.dim() == 1 and prediction.shape[0] == 1 else prediction

    def log_abs_det(self) -> Tensor:
        """``log|d e / d z|`` of one draw (a constant)."""
        return -torch.log(self.scale).sum()


def regression_features(x: Tensor, pool: Sequence[int] = ()) -> Tensor:
    """``(N, p)`` features of ``(N, *shape)`` data: the data flattened, after averaging over
    the ``pool`` axes (i.i.d. trials or time), so the features, like the embedding, do not
    depend on the order or the number of trials.

    Example:
        >>> trials = torch.arange(12.0).reshape(1, 4, 3)  # one data set, 4 trials of 3 values
        >>> regression_features(trials, pool=(0,))
        tensor([[4.5000, 5.5000, 6.5000]])
    """
    if pool:
        x = x.mean(dim=tuple(1 + int(a) for a in pool))
    return x.reshape(x.shape[0], -1)


class PairScaling(nn.Module):
    """Every map between NPE's pairs and its networks' inputs: the data z-scored
    (``data``), the unconstrained latents z-scored by the simulations and then, with
    ``standardize="regression"``, standardised given the data (``to_flow``/``from_flow``).

    Args:
        theta: the latents' :class:`Standardizer`.
        x: the data's :class:`Standardizer`.
        latent: the :class:`RegressionStandardizer` applied after ``theta``
            (``RegressionStandardizer.identity`` for ``standardize="prior"``).

    Example:
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> u = torch.randn(500, 2)
        >>> x = u[:, :1] + 0.1 * torch.randn(500, 1)
        >>> scaling = PairScaling.fit(u, x, standardize="regression")
        >>> z = scaling.to_flow(u, scaling.data(x))
        >>> [round(float(s), 1) for s in z.std(0)]
        [1.0, 1.0]
        >>> bool(torch.allclose(scaling.from_flow(z, scaling.data(x)), u, atol=1e-5))
        True
    """

    def __init__(self, theta: Standardizer, x: Standardizer,
                 latent: RegressionStandardizer) -> None:
        super().__init__()
        self.theta, self.x, self.latent = theta, x, latent

    @classmethod
    def fit(cls, u: Tensor, x: Tensor, *, standardize: str = "prior", pool: Sequence[int] = (),
            constant: str = "error", data_name: str = "data",
            rows: Tensor | None = None) -> PairScaling:
        """The scaling of ``(N, D)`` unconstrained latents ``u`` and ``(N, *shape)`` data
        ``x``; ``pool`` and ``constant`` as for :meth:`Standardizer.fit`.

        ``rows`` (indices; None: all) are the pairs the regression is fitted on: NPE passes
        its training rows, so the validation loss of a regression-standardised estimator is
        not scored on pairs the regression has seen (it has ``p * D`` coefficients; the
        z-scoring, two statistics per column, uses all pairs as sbi does).
        """
        theta = Standardizer.fit(u, name="latent (unconstrained)")
        data = Standardizer.fit(x, name=data_name, pool=pool, constant=constant)
        if standardize != "regression":
            return cls(theta, data, RegressionStandardizer.identity(u.shape[-1]))
        if rows is not None:
            u, x = u[rows], x[rows]
        return cls(theta, data, RegressionStandardizer.fit(theta(u), data(x), pool))

    def data(self, x: Tensor) -> Tensor:
        """The standardised data (what the embedding reads)."""
        return self.x(x)

    def to_flow(self, u: Tensor, xs: Tensor) -> Tensor:
        """Unconstrained latents ``(..., N, D)`` to the flow's space, given the ``N``
        standardised data sets ``xs``."""
        return self.latent(self.theta(u), xs)

    def from_flow(self, z: Tensor, xs: Tensor) -> Tensor:
        """Undo :meth:`to_flow`."""
        return self.theta.inverse(self.latent.inverse(z, xs))

    def log_abs_det(self) -> Tensor:
        """``log|dz/du|`` of :meth:`to_flow`, the same for every draw."""
        return self.theta.log_abs_det() + self.latent.log_abs_det()
