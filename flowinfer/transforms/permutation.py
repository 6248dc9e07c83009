"""A fixed permutation of the event dimensions: Pyro's ``Permute`` as a module.

Pyro's ``Permute`` keeps its index tensor as a plain attribute, so ``.to(device)``,
``state_dict`` and ``load_state_dict`` miss it. Here both index tensors are buffers and the
arithmetic is Pyro's own.
"""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms import Permute
from torch import Tensor

from flowinfer.transforms.base import check_event

__all__ = ["Permutation", "permutation"]


class Permutation(Permute, TransformModule):
    """Reorders the last dimension: ``y = x[..., permutation]`` (log-det zero).

    Example:
        >>> t = Permutation(torch.tensor([2, 0, 1]))
        >>> t(torch.tensor([10.0, 20.0, 30.0]))
        tensor([30., 10., 20.])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(self, permutation: Tensor) -> None:
        # torch's cache (keyed on the input tensor) is safe here, as there are no parameters to
        # go stale; it keeps `inv` of a just-computed output returning the very input tensor,
        # which the cached layers before it rely on.
        TransformModule.__init__(self, cache_size=1)
        perm = torch.as_tensor(permutation, dtype=torch.long).flatten()
        if not torch.equal(perm.sort().values, torch.arange(perm.numel())):
            raise ValueError(f"permutation must be a permutation of range(n), got {perm.tolist()}")
        self.dim = -1
        self.register_buffer("permutation", perm)
        self.register_buffer("inverse_permutation", torch.argsort(perm))

    @property
    def inv_permutation(self) -> Tensor:  # read by Permute._inverse
        return self.inverse_permutation

    @property
    def size(self) -> int:
        return self.permutation.numel()

    def call_and_ladj(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event(x, self.size, "x")
        return self._call(x), x.new_zeros(x.shape[:-1])

    def inverse_and_ladj(
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        check_event(y, self.size, "y")
        return self._inverse(y), y.new_zeros(y.shape[:-1])

    def with_cache(self, cache_size: int = 1) -> Permutation:
        return self

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_cached_x_y"] = None, None
        return state

    def extra_repr(self) -> str:
        return f"size={self.size}"


def permutation(dim: int, kind: str = "reverse", seed: int = 0) -> Permutation:
    """A :class:`Permutation` of ``range(dim)``: ``"reverse"`` or a seeded ``"random"`` one.

    Example:
        >>> permutation(3).permutation
        tensor([2, 1, 0])
    """
    if kind == "reverse":
        return Permutation(torch.arange(dim - 1, -1, -1))
    if kind == "random":
        generator = torch.Generator().manual_seed(seed)
        return Permutation(torch.randperm(dim, generator=generator))
    raise ValueError(f"kind must be 'reverse' or 'random', got {kind!r}")
