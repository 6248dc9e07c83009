"""Learnable elementwise affine maps: a plain one and ActNorm (data-dependent start)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowinfer.nn import check_positive_int
from flowinfer.transforms.base import Bijector

__all__ = ["ElementwiseAffine", "ActNorm", "DataDependentInit", "elementwise_affine", "actnorm"]


class ElementwiseAffine(Bijector):
    """``y = x * exp(log_scale) + loc`` with a learnable vector ``loc`` and ``log_scale``.

    Starts at the identity (both parameters zero).

    Example:
        >>> t = ElementwiseAffine(3)
        >>> x = torch.randn(5, 3)
        >>> torch.equal(t(x), x)
        True
    """

    def __init__(self, dim: int) -> None:
        super().__init__(check_positive_int(dim, "dim"))
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def _ladj(self, x: Tensor) -> Tensor:
        return self.log_scale.sum().expand(x.shape[:-1])

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, _ = self._check_input(x, context, "x")
        return x * torch.exp(self.log_scale) + self.loc, self._ladj(x)

    def inverse_and_ladj(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        y, _ = self._check_input(y, context, "y")
        return (y - self.loc) * torch.exp(-self.log_scale), self._ladj(y)


class DataDependentInit(nn.Module):
    """An ``initialized`` flag for layers that set their parameters from the first data batch.

    The flag is a buffer, so checkpoints keep it (a loaded layer is not re-initialised); the
    hot path branches on its Python mirror ``_is_initialized``, because branching on a tensor
    breaks ``torch.compile`` graphs (and synchronises a GPU).
    """

    def _add_init_flag(self) -> None:
        self.register_buffer("initialized", torch.tensor(False))
        self._is_initialized = False

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._is_initialized = bool(self.initialized)

    @torch.no_grad()
    def _mark_initialized(self) -> None:
        self.initialized.fill_(True)
        self._is_initialized = True


class ActNorm(DataDependentInit, ElementwiseAffine):
    """Activation normalisation: an elementwise affine map with data-dependent initialisation.

    The first time data passes through the layer in the data -> base direction (``inverse``,
    as in ``log_prob`` of a batch during training), ``loc`` and ``log_scale`` are set so that
    this batch comes out with zero mean and unit variance per dimension. Samples travelling
    base -> data need no such start, so a forward call only marks the layer as initialised.
    The flag is a buffer: a loaded checkpoint is not re-initialised.

    Example:
        >>> t = ActNorm(2)
        >>> data = 3.0 + 2.0 * torch.randn(1000, 2)
        >>> z = t.inv(data)
        >>> bool(z.mean(0).abs().max() < 1e-5)
        True

    References:
        Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions".
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._add_init_flag()

    @torch.no_grad()
    def _initialize(self, y: Tensor) -> None:
        flat = y.detach().reshape(-1, self.dim)
        if flat.shape[0] < 2:
            return
        std = flat.std(dim=0).clamp_min(1e-6)
        self.loc.copy_(flat.mean(dim=0))
        self.log_scale.copy_(torch.log(std))
        self._mark_initialized()

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if not self._is_initialized and self.training:
            self._mark_initialized()
        return super().call_and_ladj(x, context)

    def inverse_and_ladj(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        if not self._is_initialized and self.training:
            self._initialize(y)
        return super().inverse_and_ladj(y, context)


def elementwise_affine(dim: int) -> ElementwiseAffine:
    """Helper constructor for :class:`ElementwiseAffine`."""
    return ElementwiseAffine(dim)


def actnorm(dim: int) -> ActNorm:
    """Helper constructor for :class:`ActNorm`."""
    return ActNorm(dim)
