"""Bijectors: every learnable one is a Pyro ``TransformModule`` (or conditional module).

See ``docs/api.md`` for the contract they share.
"""

from flowinfer.transforms.autoregressive import (
    Autoregressive,
    affine_autoregressive,
    conditional_affine_autoregressive,
    conditional_spline_autoregressive,
    spline_autoregressive,
)
from flowinfer.transforms.base import Bijector, ConditionalBijector, ConditionedBijector
from flowinfer.transforms.coupling import (
    Coupling,
    affine_coupling,
    conditional_affine_coupling,
    conditional_spline_coupling,
    spline_coupling,
)
from flowinfer.transforms.elements import AffineElement, SplineElement
from flowinfer.transforms.elementwise import ActNorm, ElementwiseAffine, actnorm, elementwise_affine
from flowinfer.transforms.images import (
    ActNorm2d,
    ChannelCoupling,
    ImageBijector,
    InvertibleConv1x1,
    MultiscaleSplit,
    Squeeze,
    Unsqueeze,
    actnorm2d,
    channel_coupling,
    glow_layers,
    invertible_conv1x1,
    multiscale_split,
    squeeze,
)
from flowinfer.transforms.linear import LULinear, lu_linear
from flowinfer.transforms.permutation import Permutation, permutation
from flowinfer.transforms.pyro_adapter import PyroTransform

__all__ = [
    "ActNorm",
    "ActNorm2d",
    "ChannelCoupling",
    "ImageBijector",
    "InvertibleConv1x1",
    "MultiscaleSplit",
    "Squeeze",
    "Unsqueeze",
    "actnorm2d",
    "channel_coupling",
    "glow_layers",
    "invertible_conv1x1",
    "multiscale_split",
    "squeeze",
    "AffineElement",
    "Autoregressive",
    "Bijector",
    "ConditionalBijector",
    "ConditionedBijector",
    "Coupling",
    "ElementwiseAffine",
    "LULinear",
    "Permutation",
    "PyroTransform",
    "SplineElement",
    "actnorm",
    "affine_autoregressive",
    "affine_coupling",
    "conditional_affine_autoregressive",
    "conditional_affine_coupling",
    "conditional_spline_autoregressive",
    "conditional_spline_coupling",
    "elementwise_affine",
    "lu_linear",
    "permutation",
    "spline_autoregressive",
    "spline_coupling",
]
