"""Bijectors on image tensors ``(..., C, H, W)``: the building blocks of Glow (re-exports).

The classes live in one module each; this module keeps the old import path working.

* :class:`~flowinfer.transforms.squeeze.Squeeze` / ``Unsqueeze``: space-to-depth.
* :class:`~flowinfer.transforms.elementwise.ActNorm` with ``(C, H, W)``: per-channel affine
  map with data-dependent initialisation (``ActNorm2d`` is its deprecated old name).
* :class:`~flowinfer.transforms.conv.InvertibleConv1x1`: Glow's invertible 1x1 convolution.
* :class:`~flowinfer.transforms.channel_coupling.ChannelCoupling`: affine coupling over
  channels, convolutional conditioner.
* :class:`~flowinfer.transforms.multiscale.MultiscaleSplit`: factors out half of the
  channels (RealNVP/Glow multiscale architecture).
* :func:`~flowinfer.transforms.glow.glow_layers`: the multiscale Glow used by
  ``build_flow("glow", shape=(C, H, W), ...)``.

References:
    Dinh et al. (2017), "Density estimation using Real NVP", ICLR.
    Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions",
    NeurIPS.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import Tensor

from flowinfer.transforms.base import check_event
from flowinfer.transforms.channel_coupling import ChannelCoupling
from flowinfer.transforms.conv import InvertibleConv1x1
from flowinfer.transforms.elementwise import ActNorm
from flowinfer.transforms.glow import glow_layers
from flowinfer.transforms.image_base import ImageBijector, check_image_shape
from flowinfer.transforms.multiscale import MultiscaleSplit
from flowinfer.transforms.squeeze import Squeeze, Unsqueeze

__all__ = [
    "ImageBijector",
    "Squeeze",
    "Unsqueeze",
    "InvertibleConv1x1",
    "ChannelCoupling",
    "MultiscaleSplit",
    "check_image",
    "check_image_shape",
    "glow_layers",
]


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and will be removed in flowinfer 0.3; use {new}",
                  DeprecationWarning, stacklevel=3)


def check_image(x: Tensor, shape: Sequence[int], name: str) -> None:
    """Raise ``TypeError``/``ValueError`` unless ``x`` has shape ``(..., *shape)``."""
    check_event(x, tuple(shape), name)


class ActNorm2d(ActNorm):
    """Deprecated: ``ActNorm((C, H, W))`` is the same layer (same parameters and state dict).

    Kept so that code and whole-module pickles written with flowinfer 0.1 still load.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        _deprecated("ActNorm2d(shape)", "ActNorm(shape)")
        super().__init__(check_image_shape(shape))


def squeeze(shape: Sequence[int]) -> Squeeze:
    """Deprecated: use :class:`Squeeze`."""
    _deprecated("squeeze(shape)", "Squeeze(shape)")
    return Squeeze(shape)


def actnorm2d(shape: Sequence[int]) -> ActNorm:
    """Deprecated: use :class:`~flowinfer.transforms.elementwise.ActNorm`."""
    _deprecated("actnorm2d(shape)", "ActNorm(shape)")
    return ActNorm(check_image_shape(shape))


def invertible_conv1x1(shape: Sequence[int]) -> InvertibleConv1x1:
    """Deprecated: use :class:`InvertibleConv1x1`."""
    _deprecated("invertible_conv1x1(shape)", "InvertibleConv1x1(shape)")
    return InvertibleConv1x1(shape)


def channel_coupling(
    shape: Sequence[int], hidden_channels: int = 64, log_scale_bound: float = 3.0
) -> ChannelCoupling:
    """Deprecated: use :class:`ChannelCoupling`."""
    _deprecated("channel_coupling(...)", "ChannelCoupling(...)")
    return ChannelCoupling(shape, hidden_channels, log_scale_bound)


def multiscale_split(
    shape: Sequence[int], inner: Sequence = (), log_scale_bound: float = 3.0
) -> MultiscaleSplit:
    """Deprecated: use :class:`MultiscaleSplit`."""
    _deprecated("multiscale_split(...)", "MultiscaleSplit(...)")
    return MultiscaleSplit(shape, inner, log_scale_bound)
