"""Coupling layers: RealNVP (affine element) and NSF-C (spline element).

The dimensions where ``mask`` is True pass through unchanged and condition, through an MLP,
the element transform of the others. Both directions cost one conditioner pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from flowinfer.checks import check_int
from flowinfer.nn import MLP, check_hidden
from flowinfer.transforms.base import Bijector, ConditionalBijector
from flowinfer.transforms.elements import (
    AffineElement,
    SplineElement,
    element_name,
    make_element,
)

__all__ = [
    "Coupling",
    "affine_coupling",
    "spline_coupling",
    "conditional_affine_coupling",
    "conditional_spline_coupling",
    "default_mask",
]


def default_mask(dim: int, flip: bool = False) -> Tensor:
    """Boolean mask with the first ``dim // 2`` entries True (conditioning), or the rest."""
    mask = torch.arange(dim) < dim // 2
    return ~mask if flip else mask


class Coupling(Bijector):
    """Coupling layer ``y_B = h(x_B; theta(x_A, context))``, ``y_A = x_A``.

    Args:
        dim: event size.
        mask: boolean tensor of shape ``(dim,)``; True marks the conditioning part ``A``.
            Default: the first ``dim // 2`` dimensions.
        element: ``"affine"`` (RealNVP) or ``"spline"`` (rational-quadratic, NSF), or an
            element object (``AffineElement(log_scale_bound)``, ``SplineElement(bins,
            bound)``), which then carries its own settings.
        hidden: conditioner hidden sizes.
        context_dim: size of an optional context vector fed to the conditioner.
        bins: spline bins (spline element by name only).
        bound: spline interval ``[-bound, bound]``; identity outside (spline by name only).
        log_scale_bound: soft bound on the per-layer log scale (affine by name only).

    Example:
        >>> layer = Coupling(4, element="spline")
        >>> x = torch.randn(10, 4)
        >>> y, ladj = layer.call_and_ladj(x)
        >>> torch.allclose(y, x), ladj.shape
        (True, torch.Size([10]))
        >>> from flowinfer.transforms import SplineElement
        >>> Coupling(4, element=SplineElement(bins=4, bound=3.0)).element.bound
        3.0

    References:
        Dinh et al. (2017), "Density estimation using Real NVP", ICLR.
        Durkan et al. (2019), "Neural Spline Flows", NeurIPS.
    """

    def __init__(
        self,
        dim: int,
        mask: Tensor | Sequence[bool] | None = None,
        element: str | AffineElement | SplineElement = "affine",
        hidden: Sequence[int] = (64, 64),
        context_dim: int = 0,
        bins: int = 8,
        bound: float = 5.0,
        log_scale_bound: float = 5.0,
    ) -> None:
        check_int(dim, "dim")
        check_int(context_dim, "context_dim", 0)
        super().__init__(dim, context_dim)
        mask = default_mask(dim) if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (dim,):
            raise ValueError(f"mask must have shape ({dim},), got {tuple(mask.shape)}")
        if bool(mask.all()):
            raise ValueError("mask must leave at least one dimension to transform (a False)")
        identity_idx = torch.nonzero(mask).flatten()
        transform_idx = torch.nonzero(~mask).flatten()
        # Gathering the two parts, transforming one, and re-concatenating needs the inverse
        # of the [identity, transformed] ordering; precomputed once, not per call.
        order = torch.cat([identity_idx, transform_idx])
        self.register_buffer("mask", mask)
        self.register_buffer("identity_idx", identity_idx)
        self.register_buffer("transform_idx", transform_idx)
        self.register_buffer("restore_idx", torch.argsort(order))
        # The usual masks (one half conditions the other) are a contiguous block at either
        # end: then slicing (free views) and one cat replace three index_select copies.
        # None when the mask is scattered; the index buffers above then do the work.
        self._block = self._find_block()
        self.element = make_element(
            element, bins=bins, bound=bound, log_scale_bound=log_scale_bound
        )
        self.element_name = element_name(self.element)
        n_out = transform_idx.numel()
        self.conditioner = MLP(
            identity_idx.numel() + context_dim,
            n_out * self.element.num_params,
            hidden=check_hidden(hidden),
        )

    def _find_block(self) -> str | None:
        identity_idx = self.identity_idx.cpu()
        n_id = identity_idx.numel()
        if torch.equal(identity_idx, torch.arange(n_id)):
            return "first"
        if torch.equal(identity_idx, torch.arange(self.dim - n_id, self.dim)):
            return "last"
        return None

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        # A loaded mask may differ from the one built with; the fast path must follow it.
        self._block = self._find_block()

    def _split(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        n_id = self.dim - self.transform_idx.shape[0]
        if self._block == "first":
            x_a, x_b = x[..., :n_id], x[..., n_id:]
        elif self._block == "last":
            x_b, x_a = x[..., : self.dim - n_id], x[..., self.dim - n_id :]
        else:
            x_a = x.index_select(-1, self.identity_idx)
            x_b = x.index_select(-1, self.transform_idx)
        h = x_a if context is None else torch.cat([x_a, context], dim=-1)
        params = self.conditioner(h).unflatten(-1, (x_b.shape[-1], self.element.num_params))
        return x_a, x_b, params

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        if self._block == "first":
            return torch.cat([a, b], dim=-1)
        if self._block == "last":
            return torch.cat([b, a], dim=-1)
        return torch.cat([a, b], dim=-1).index_select(-1, self.restore_idx)

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x_a, x_b, params = self._split(x, context)
        y_b, ladj = self.element(x_b, params)
        return self._join(x_a, y_b), ladj.sum(-1)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        y_a, y_b, params = self._split(y, context)
        x_b, ladj = self.element.inverse(y_b, params)
        return self._join(y_a, x_b), ladj.sum(-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, element={self.element_name!r}"


def affine_coupling(
    dim: int, hidden: Sequence[int] = (64, 64), mask: Tensor | None = None, **kwargs
) -> Coupling:
    """RealNVP affine coupling layer (a :class:`Coupling` with the affine element).

    Example:
        >>> affine_coupling(2)(torch.zeros(3, 2)).shape
        torch.Size([3, 2])
    """
    return Coupling(dim, mask=mask, element="affine", hidden=hidden, **kwargs)


def spline_coupling(
    dim: int,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    bound: float = 5.0,
    mask: Tensor | None = None,
    **kwargs,
) -> Coupling:
    """NSF rational-quadratic spline coupling layer.

    Example:
        >>> spline_coupling(2, bins=4)(torch.zeros(3, 2)).shape
        torch.Size([3, 2])
    """
    return Coupling(dim, mask=mask, element="spline", hidden=hidden, bins=bins, bound=bound,
                    **kwargs)


def conditional_affine_coupling(
    dim: int, context_dim: int, hidden: Sequence[int] = (64, 64), **kwargs
) -> ConditionalBijector:
    """Context-conditioned RealNVP coupling: ``.condition(context)`` gives a transform.

    Example:
        >>> layer = conditional_affine_coupling(2, context_dim=3)
        >>> layer.condition(torch.randn(3))(torch.zeros(5, 2)).shape
        torch.Size([5, 2])
    """
    check_int(context_dim, "context_dim")
    return ConditionalBijector(affine_coupling(dim, hidden, context_dim=context_dim, **kwargs))


def conditional_spline_coupling(
    dim: int, context_dim: int, hidden: Sequence[int] = (64, 64), **kwargs
) -> ConditionalBijector:
    """Context-conditioned NSF spline coupling.

    Example:
        >>> layer = conditional_spline_coupling(2, context_dim=3)
        >>> layer.condition(torch.randn(3))(torch.zeros(5, 2)).shape
        torch.Size([5, 2])
    """
    check_int(context_dim, "context_dim")
    return ConditionalBijector(spline_coupling(dim, hidden, context_dim=context_dim, **kwargs))
