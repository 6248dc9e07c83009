"""Embedding networks: data -> a summary vector that conditions the posterior flow.

Trained jointly with the flow. ``build_embedding`` turns a name into a network for the
data's shape; any ``nn.Module`` mapping ``(batch, *data_shape)`` to ``(batch, k)`` is
accepted instead (checked by :func:`check_embedding` before any simulation).

- ``"mlp"``: the data flattened, through a fully connected network, with the flattened
  data passed on beside its features (``skip=False`` to drop them). NPE's default
  ``"auto"`` trains it both ways and keeps the better (:mod:`flowinfer.npe.selection`).
- ``"deepset"``: permutation-invariant over i.i.d. trials, ``rho(mean_i phi(x_i))``; data
  shaped ``(trials, features)`` or ``(trials,)``.
- ``"conv"``: 1-D convolutions over time, for time series ``(T,)`` or ``(T, channels)``.
- ``"gru"``: a recurrent network over time, the final hidden state.
- ``"identity"``: the flattened data itself.

Each network says which data axes the standardisation pools over (``pool``: the trial or
time axis), so z-scoring keeps the same invariances as the network.

Example:
    >>> import torch
    >>> net = DeepSetEmbedding(features=2, out_features=4)
    >>> x = torch.randn(3, 10, 2)
    >>> torch.allclose(net(x), net(x[:, torch.randperm(10)]), atol=1e-6)
    True

References:
    Zaheer et al. (2017), "Deep Sets", NeurIPS. Radev et al. (2020), "BayesFlow: Learning
    complex stochastic models with invertible neural networks", IEEE TNNLS (jointly
    trained summary networks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowinfer.checks import check_choice, check_int

__all__ = ["MLPEmbedding", "DeepSetEmbedding", "ConvEmbedding", "GRUEmbedding",
           "IdentityEmbedding", "build_embedding", "make_embedding", "check_embedding",
           "embedding_pool", "EMBEDDINGS"]

EMBEDDINGS = ("mlp", "deepset", "conv", "gru", "identity")


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class IdentityEmbedding(nn.Module):
    """The data flattened to ``(batch, prod(shape))``."""

    pool: tuple[int, ...] = ()

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.out_features = max(1, math.prod(self.shape))

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1)


class MLPEmbedding(nn.Module):
    """Flattened data through ``Linear-ReLU`` layers to ``out_features``, and the data too.

    With ``skip=True`` (the default) the flattened data are passed on beside the learned
    features (``in_features + out_features`` in all): the flow's conditioners see every
    linear function of the data without the embedding having to learn it from few
    simulations, and the embedding cannot lose information the data carry. Measured by the
    held-out posterior density on fresh simulations (``benchmarks/npe_heldout.py``,
    docs/npe.md "Defaults"). ``skip=False`` returns the learned features only.
    """

    pool: tuple[int, ...] = ()

    def __init__(self, in_features: int, out_features: int = 32,
                 hidden: Sequence[int] = (64, 64), skip: bool = True) -> None:
        super().__init__()
        in_features = check_int(in_features, "in_features")
        self.skip = bool(skip)
        self.out_features = check_int(out_features, "out_features") + (in_features if skip else 0)
        self.net = _mlp([in_features, *hidden, out_features])

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        features = self.net(flat)
        return torch.cat([flat, features], -1) if self.skip else features


class DeepSetEmbedding(nn.Module):
    """``rho(mean over trials of phi(x_i))``: invariant to the order of the trials.

    Input ``(batch, trials, features)`` (or ``(batch, trials)`` when ``features == 1``).
    The mean (not the sum) keeps the scale independent of the number of trials.
    """

    pool: tuple[int, ...] = (0,)

    def __init__(self, features: int, out_features: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.features = check_int(features, "features")
        self.out_features = check_int(out_features, "out_features")
        self.phi = _mlp([features, hidden, hidden, hidden])
        self.rho = _mlp([hidden, hidden, out_features])

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        return self.rho(self.phi(x).mean(dim=1))


class ConvEmbedding(nn.Module):
    """1-D convolutions over time, pooled to a fixed length, then a linear map.

    Input ``(batch, T)`` or ``(batch, T, channels)``.
    """

    pool: tuple[int, ...] = (0,)

    def __init__(self, channels: int = 1, out_features: int = 32, hidden: int = 32,
                 kernel_size: int = 5, length: int = 8) -> None:
        super().__init__()
        self.out_features = check_int(out_features, "out_features")
        pad = kernel_size // 2
        self.conv = nn.Sequential(
            nn.Conv1d(channels, hidden, kernel_size, padding=pad), nn.ReLU(),
            nn.Conv1d(hidden, hidden, kernel_size, padding=pad), nn.ReLU(),
            nn.AdaptiveAvgPool1d(length),
        )
        self.head = nn.Linear(hidden * length, out_features)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        h = self.conv(x.transpose(1, 2))
        return self.head(h.flatten(1))


class GRUEmbedding(nn.Module):
    """A GRU over time; the last hidden state through a linear map.

    Input ``(batch, T)`` or ``(batch, T, channels)``.
    """

    pool: tuple[int, ...] = (0,)

    def __init__(self, channels: int = 1, out_features: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.out_features = check_int(out_features, "out_features")
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, out_features)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(-1)
        _, h = self.gru(x)
        return self.head(h[-1])


def build_embedding(kind: str, data_shape: Sequence[int], **kwargs: Any) -> nn.Module:
    """The named embedding for data of ``data_shape`` (one draw, flattened if several sites).

    Raises:
        ValueError: unknown name, or a shape the network cannot take (named in the message).
    """
    check_choice(kind, "embedding", EMBEDDINGS)
    shape = tuple(data_shape)
    size = max(1, math.prod(shape))
    if kind == "identity":
        return IdentityEmbedding(shape)
    if kind == "mlp":
        return MLPEmbedding(size, **kwargs)
    if len(shape) not in (1, 2):
        raise ValueError(f'embedding="{kind}" takes data shaped (trials_or_time,) or '
                         f"(trials_or_time, features), got data of shape {shape}")
    features = 1 if len(shape) == 1 else shape[1]
    if kind == "deepset":
        return DeepSetEmbedding(features, **kwargs)
    if kind == "conv":
        return ConvEmbedding(features, **kwargs)
    return GRUEmbedding(features, **kwargs)


def make_embedding(embedding: Any, options: dict | None, data_shape: Sequence[int]
                   ) -> tuple[nn.Module, str | None, dict]:
    """``(module, name or None, options)`` from a name (built) or a module (kept)."""
    if isinstance(embedding, str):
        check_choice(embedding, "embedding", EMBEDDINGS)
        options = dict(options or {})
        return build_embedding(embedding, data_shape, **options), embedding, options
    if options:
        raise ValueError("embedding_options apply to a named embedding only")
    return embedding, None, {}


def embedding_pool(net: nn.Module, data_shape: Sequence[int]) -> tuple[int, ...]:
    """The data axes ``net`` pools over (its ``pool``), or none when data shaped
    ``data_shape`` lack them (one trial given without its trial axis).

    Example:
        >>> net = DeepSetEmbedding(features=1)
        >>> embedding_pool(net, (10,)), embedding_pool(net, ())
        ((0,), ())
    """
    pool = tuple(getattr(net, "pool", ()))
    return pool if len(data_shape) > max(pool, default=-1) else ()


def check_embedding(net: Any, data_shape: Sequence[int]) -> int:
    """Run ``net`` on two dummy draws; returns its output size or raises a clear error."""
    if not isinstance(net, nn.Module):
        raise TypeError(f"embedding must be a name in {EMBEDDINGS} or an nn.Module, got "
                        f"{type(net).__name__}")
    dummy = torch.zeros(2, *data_shape)
    try:
        with torch.no_grad():
            out = net(dummy)
    except Exception as err:
        raise ValueError(f"the embedding network failed on a batch of data shaped "
                         f"{tuple(dummy.shape)} (batch, *data_shape): {type(err).__name__}: "
                         f"{err}") from None
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 2:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"the embedding network must map data shaped (batch, "
                         f"*{tuple(data_shape)}) to (batch, k); on a batch of 2 it returned "
                         f"{got}")
    if out.shape[1] < 1:
        raise ValueError("the embedding network returned 0 features")
    return int(out.shape[1])
