"""The multiscale split of RealNVP and Glow: factor out half of the channels.

References:
    Dinh et al. (2017), "Density estimation using Real NVP", ICLR.
    Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions",
    NeurIPS.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowinfer.transforms.base import Bijector
from flowinfer.transforms.elements import AffineElement
from flowinfer.transforms.image_base import ImageBijector, batched, event_sum, zero_conv

__all__ = ["MultiscaleSplit"]


def _run(layers: Sequence[Bijector], x: Tensor) -> tuple[Tensor, Tensor]:
    total = x.new_zeros(x.shape[:-3])
    for layer in layers:
        x, ladj = layer.call_and_ladj(x)
        total = total + ladj
    return x, total


def _run_inverse(layers: Sequence[Bijector], y: Tensor) -> tuple[Tensor, Tensor]:
    total = y.new_zeros(y.shape[:-3])
    for layer in reversed(layers):
        y, ladj = layer.inverse_and_ladj(y)
        total = total + ladj
    return y, total


class MultiscaleSplit(ImageBijector):
    """Factor out half of the channels; the other half continues through ``inner`` layers.

    Data -> base: the input ``x = [x_a, x_b]`` (``x_a`` the first ``C // 2`` channels) is
    mapped to ``z_b = (x_b - mu(x_a)) * exp(-s(x_a))`` and ``z_a = inner^{-1}(x_a)``. With a
    standard normal base on ``z``, ``x_b`` has the learned Gaussian prior
    ``N(mu(x_a), exp(s(x_a))^2)`` of Glow's split (its density enters ``log_prob`` through
    ``log|det J|``), and ``x_a`` the density of the deeper levels. ``mu`` and ``s`` come
    from a zero-initialised 3x3 convolution, so the prior starts as ``N(0, 1)``. Sampling
    draws ``z_b`` from the base, so temperature scaling reaches every level.

    Args:
        shape: event shape ``(C, H, W)`` with ``C >= 2``.
        inner: image bijectors (forward order, base -> data) applied to the kept half; they
            must map ``(C // 2, H, W)`` to itself overall (e.g. the next Glow level,
            squeeze ... unsqueeze).
        log_scale_bound: soft bound on ``s``.

    Example:
        >>> from flowinfer.transforms import ChannelCoupling, Squeeze, Unsqueeze
        >>> inner = [Squeeze((1, 4, 4)), ChannelCoupling((4, 2, 2), 8), Unsqueeze((4, 2, 2))]
        >>> t = MultiscaleSplit((2, 4, 4), inner)
        >>> x = torch.randn(5, 2, 4, 4)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-6)
        True

    References:
        Dinh et al. (2017), "Density estimation using Real NVP", ICLR.
        Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions".
    """

    def __init__(
        self,
        shape: Sequence[int],
        inner: Sequence[Bijector] = (),
        log_scale_bound: float = 3.0,
    ) -> None:
        super().__init__(shape)
        c, h, w = self.shape
        if c < 2:
            raise ValueError(f"shape must have at least 2 channels to split, got {self.shape}")
        self.split = c // 2
        kept = (self.split, h, w)
        current = kept
        for i, layer in enumerate(inner):
            # Any image bijector, or ActNorm((C, H, W)): a Bijector on 3-D events.
            if not isinstance(layer, Bijector) or len(layer.shape) != 3 or layer.context_dim:
                raise TypeError(f"inner[{i}] must be a bijector on (C, H, W) tensors without "
                                f"context (an ImageBijector or ActNorm((C, H, W))), got "
                                f"{type(layer).__name__} {layer!r}")
            if layer.shape != current:
                raise ValueError(f"inner[{i}] takes shape {layer.shape} but receives {current}")
            current = layer.out_shape
        if current != kept:
            raise ValueError(f"inner layers must map the kept half {kept} to itself, they end "
                             f"at {current}")
        self.inner = nn.ModuleList(inner)
        self.element = AffineElement(log_scale_bound)
        self.prior = zero_conv(self.split, 2 * (c - self.split), 3)
        self.prior.to(memory_format=torch.channels_last)

    def _params(self, x_a: Tensor) -> Tensor:
        flat, batch = batched(x_a)
        h = self.prior(flat).unflatten(1, (-1, 2)).movedim(2, -1)
        return h.reshape(*batch, *h.shape[1:])

    def _call_and_ladj(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x_a, ladj = _run(self.inner, x[..., : self.split, :, :])
        x_b, log_scale = self.element(x[..., self.split:, :, :], self._params(x_a))
        return torch.cat([x_a, x_b], dim=-3), ladj + event_sum(log_scale)

    def _inverse_and_ladj(self, y: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x_a = y[..., : self.split, :, :]
        z_b, log_scale = self.element.inverse(y[..., self.split:, :, :], self._params(x_a))
        z_a, ladj = _run_inverse(self.inner, x_a)
        return torch.cat([z_a, z_b], dim=-3), ladj + event_sum(log_scale)
