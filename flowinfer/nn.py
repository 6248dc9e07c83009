"""Conditioner networks: a plain MLP and a masked autoregressive MLP (MADE).

Both networks end in a zero-initialised linear layer, so every flow built on them starts
exactly at the identity map (the conditioner outputs all-zero parameters, which every
element transform in :mod:`flowinfer.transforms` maps to the identity).

References:
    Germain et al. (2015), "MADE: Masked Autoencoder for Distribution Estimation", ICML.
    Papamakarios et al. (2017), "Masked Autoregressive Flow for Density Estimation", NeurIPS.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from flowinfer.checks import check_bool, check_int, check_shape, is_int

__all__ = ["MLP", "MaskedLinear", "MaskedMLP", "check_hidden"]


def check_positive_int(value: object, name: str, *, allow_zero: bool = False) -> int:
    """Deprecated: use :func:`flowinfer.checks.check_int` (``TypeError`` for a non-integer).

    Kept, with its old behaviour (``ValueError`` for everything), until its last callers
    outside the flow layer move to ``check_int``.
    """
    warnings.warn("flowinfer.nn.check_positive_int is deprecated; use "
                  "flowinfer.checks.check_int", DeprecationWarning, stacklevel=2)
    lowest = 0 if allow_zero else 1
    if not is_int(value) or value < lowest:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {kind} integer, got {value!r}")
    return int(value)


def check_hidden(hidden: Sequence[int] | int, name: str = "hidden") -> tuple[int, ...]:
    """Normalise a hidden-layer specification (an int or a sequence) to a tuple of positive ints.

    Raises:
        TypeError: ``hidden`` is not an int or a sequence of ints.
        ValueError: it is empty or holds a size below 1.
    """
    if is_int(hidden):
        hidden = (hidden,)
    return check_shape(hidden, name)


def _zero_(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class MLP(nn.Module):
    """Fully connected network whose last layer starts at zero.

    Args:
        in_features: input size (may be 0: the output is then a learnable constant).
        out_features: output size.
        hidden: sizes of the hidden layers.
        activation: activation module class, applied after every hidden layer.
        zero_init: start the output layer at zero weights and bias.

    Example:
        >>> net = MLP(3, 4, hidden=(16, 16))
        >>> net(torch.randn(5, 3)).abs().max().item()
        0.0
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: Callable[[], nn.Module] = nn.ReLU,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        check_int(in_features, "in_features", 0)
        check_int(out_features, "out_features")
        check_bool(zero_init, "zero_init")
        hidden = check_hidden(hidden)
        layers: list[nn.Module] = []
        size = in_features
        for width in hidden:
            layers += [nn.Linear(size, width), activation()]
            size = width
        output = nn.Linear(size, out_features)
        layers.append(_zero_(output) if zero_init else output)
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MaskedLinear(nn.Linear):
    """Linear layer whose weight is multiplied by a fixed 0/1 mask (a buffer).

    Args:
        mask: ``(out_features, in_features)`` tensor of zeros and ones.
        bias: add a learnable bias.
    """

    def __init__(self, mask: Tensor, bias: bool = True) -> None:
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features, bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class _MaskedResidualBlock(nn.Module):
    def __init__(self, mask: Tensor, activation: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.first = MaskedLinear(mask)
        self.second = MaskedLinear(mask)
        self.activation = activation()
        # The block starts as the identity so that depth does not disturb initialisation.
        _zero_(self.second)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.second(self.activation(self.first(self.activation(h))))


class MaskedMLP(nn.Module):
    """Masked autoregressive network (MADE) with optional context and residual blocks.

    Output ``[..., i, :]`` (the ``params_per_dim`` parameters of input dimension ``i``)
    depends only on inputs that come strictly before ``i`` in ``ordering``, and on the
    whole context vector.

    Args:
        dim: number of autoregressive inputs.
        params_per_dim: number of outputs per input dimension.
        hidden: hidden layer sizes (all equal when ``residual=True``).
        context_dim: size of an optional context vector, connected to every hidden unit.
        ordering: a permutation of ``range(dim)``; ``ordering[i]`` is the position of input
            ``i`` in the autoregressive order. Default: the natural order.
        residual: use masked residual blocks after the first layer.
        activation: activation module class.

    Example:
        >>> made = MaskedMLP(3, params_per_dim=2, hidden=(16, 16))
        >>> made(torch.randn(5, 3)).shape
        torch.Size([5, 3, 2])

    References:
        Germain et al. (2015), "MADE: Masked Autoencoder for Distribution Estimation".
        Nash & Durkan (2019), "Autoregressive Energy Machines" (residual MADE).
    """

    def __init__(
        self,
        dim: int,
        params_per_dim: int,
        hidden: Sequence[int] = (64, 64),
        context_dim: int = 0,
        ordering: Sequence[int] | Tensor | None = None,
        residual: bool = False,
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.dim = check_int(dim, "dim")
        self.params_per_dim = check_int(params_per_dim, "params_per_dim")
        self.context_dim = check_int(context_dim, "context_dim", 0)
        check_bool(residual, "residual")
        hidden = check_hidden(hidden)
        if residual and len(set(hidden)) != 1:
            raise ValueError(f"hidden must hold equal sizes when residual=True, got {hidden}")
        order = self._check_ordering(ordering, dim)
        self.register_buffer("ordering", order)

        # Degrees: inputs carry their rank, context inputs -1 (they may feed everything).
        # Hidden units get a degree in [0, dim - 2] so each feeds outputs of larger rank;
        # with context, degree -1 units too: they see only the context and are the way the
        # first output in the order receives it.
        lowest = -1 if self.context_dim else 0
        span = max(dim - 2, 0) - lowest + 1
        hidden_degrees = [torch.arange(width) % span + lowest for width in hidden]
        input_degrees = torch.cat([order, torch.full((self.context_dim,), -1)])

        self.input_layer = MaskedLinear(
            self._mask(input_degrees, hidden_degrees[0], strict=False)
        )
        self.activation = activation()
        blocks: list[nn.Module] = []
        for i in range(1, len(hidden)):
            mask = self._mask(hidden_degrees[i - 1], hidden_degrees[i], strict=False)
            if residual:
                blocks.append(_MaskedResidualBlock(mask, activation))
            else:
                blocks += [MaskedLinear(mask), activation()]
        self.blocks = nn.Sequential(*blocks)
        self.residual = residual

        # Output unit for parameter p of dimension i sits at row i * params_per_dim + p.
        out_degrees = order.repeat_interleave(params_per_dim)
        out_mask = self._mask(hidden_degrees[-1], out_degrees, strict=True)
        self.output_layer = _zero_(MaskedLinear(out_mask))

    @staticmethod
    def _check_ordering(ordering: Sequence[int] | Tensor | None, dim: int) -> Tensor:
        if ordering is None:
            return torch.arange(dim)
        order = torch.as_tensor(ordering, dtype=torch.long).flatten()
        if order.numel() != dim or not torch.equal(order.sort().values, torch.arange(dim)):
            raise ValueError(
                f"ordering must be a permutation of range({dim}), got {list(order.tolist())}"
            )
        return order

    @staticmethod
    def _mask(degrees_in: Tensor, degrees_out: Tensor, strict: bool) -> Tensor:
        if strict:
            return (degrees_out[:, None] > degrees_in[None, :]).float()
        return (degrees_out[:, None] >= degrees_in[None, :]).float()

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if context is not None:
            x = torch.cat([x, context], dim=-1)
        h = self.input_layer(x)
        h = self.activation(self.blocks(h)) if self.residual else self.blocks(self.activation(h))
        out = self.output_layer(h)
        return out.unflatten(-1, (self.dim, self.params_per_dim))
