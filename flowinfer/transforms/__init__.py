"""Bijectors: every learnable one is a Pyro ``TransformModule`` (or conditional module).

See ``docs/api.md`` for the contract they share. The lowercase helpers build layers with their
networks in Pyro's style (``affine_coupling(dim)``); the helpers that only forwarded their
arguments to a class (``actnorm``, ``lu_linear``, ``squeeze``, ...) and ``ActNorm2d`` (now
``ActNorm((C, H, W))``) still import, with a ``DeprecationWarning`` when called.
"""

from flowinfer.transforms.autoregressive import (
    Autoregressive,
    affine_autoregressive,
    conditional_affine_autoregressive,
    conditional_spline_autoregressive,
    spline_autoregressive,
)
from flowinfer.transforms.base import Bijector, ConditionalBijector, ConditionedBijector
from flowinfer.transforms.channel_coupling import ChannelCoupling
from flowinfer.transforms.conv import InvertibleConv1x1
from flowinfer.transforms.coupling import (
    Coupling,
    affine_coupling,
    conditional_affine_coupling,
    conditional_spline_coupling,
    spline_coupling,
)
from flowinfer.transforms.elements import AffineElement, SplineElement
from flowinfer.transforms.elementwise import (  # noqa: F401 - deprecated helpers
    ActNorm,
    ElementwiseAffine,
    actnorm,
    elementwise_affine,
)
from flowinfer.transforms.glow import glow_layers
from flowinfer.transforms.image_base import ImageBijector
from flowinfer.transforms.images import (  # noqa: F401 - deprecated names
    ActNorm2d,
    actnorm2d,
    channel_coupling,
    invertible_conv1x1,
    multiscale_split,
    squeeze,
)
from flowinfer.transforms.linear import LULinear, lu_linear  # noqa: F401
from flowinfer.transforms.multiscale import MultiscaleSplit
from flowinfer.transforms.permutation import Permutation, permutation
from flowinfer.transforms.pyro_adapter import CorrectedSylvester, PyroTransform
from flowinfer.transforms.squeeze import Squeeze, Unsqueeze

__all__ = [
    "ActNorm",
    "AffineElement",
    "Autoregressive",
    "Bijector",
    "ChannelCoupling",
    "ConditionalBijector",
    "ConditionedBijector",
    "CorrectedSylvester",
    "Coupling",
    "ElementwiseAffine",
    "ImageBijector",
    "InvertibleConv1x1",
    "LULinear",
    "MultiscaleSplit",
    "Permutation",
    "PyroTransform",
    "SplineElement",
    "Squeeze",
    "Unsqueeze",
    "affine_autoregressive",
    "affine_coupling",
    "conditional_affine_autoregressive",
    "conditional_affine_coupling",
    "conditional_spline_autoregressive",
    "conditional_spline_coupling",
    "glow_layers",
    "permutation",
    "spline_autoregressive",
    "spline_coupling",
]
