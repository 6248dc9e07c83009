"""The multiscale Glow on images, assembled from the image bijectors.

References:
    Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions",
    NeurIPS.
    Dinh et al. (2017), "Density estimation using Real NVP", ICLR.
"""

from __future__ import annotations

from collections.abc import Sequence

from flowinfer.checks import check_int, is_int
from flowinfer.transforms.base import Bijector
from flowinfer.transforms.channel_coupling import ChannelCoupling
from flowinfer.transforms.conv import InvertibleConv1x1
from flowinfer.transforms.elementwise import ActNorm
from flowinfer.transforms.image_base import check_image_shape
from flowinfer.transforms.multiscale import MultiscaleSplit
from flowinfer.transforms.squeeze import Squeeze, Unsqueeze

__all__ = ["glow_layers"]


def _steps(shape: tuple[int, int, int], steps: int, hidden_channels: int,
           log_scale_bound: float) -> list[Bijector]:
    # Base -> data order; data -> base a step runs ActNorm, 1x1 convolution, coupling.
    layers: list[Bijector] = []
    for _ in range(steps):
        layers += [ChannelCoupling(shape, hidden_channels, log_scale_bound),
                   InvertibleConv1x1(shape), ActNorm(shape)]
    return layers


def _per_level(value: int | Sequence[int], levels: int, name: str) -> list[int]:
    """One positive int per level from an int (every level) or a sequence (finest first)."""
    if is_int(value):
        return [check_int(value, name)] * levels
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(f"{name} must be an int or a sequence of one int per level, got "
                        f"{type(value).__name__} {value!r}")
    if len(value) != levels:
        raise ValueError(f"{name} must be an int or a sequence of one int per level "
                         f"(levels={levels}), got {list(value)!r}")
    return [check_int(v, name) for v in value]


def glow_layers(
    shape: Sequence[int],
    levels: int = 2,
    steps_per_level: int | Sequence[int] = 4,
    hidden_channels: int | Sequence[int] = 64,
    log_scale_bound: float = 3.0,
) -> list[Bijector]:
    """The multiscale Glow architecture on ``(C, H, W)`` images, base -> data order.

    Each level (data -> base) squeezes, runs ``steps_per_level`` steps of
    ActNorm -> invertible 1x1 convolution -> channel coupling, then (except the last level)
    factors out half of the channels with :class:`MultiscaleSplit`, whose kept half goes
    into the next level; the level ends by unsqueezing, so the base has the data's shape.

    Args:
        shape: image shape ``(C, H, W)``; ``H`` and ``W`` divisible by ``2**levels``.
        levels: number of scales ``L``.
        steps_per_level: flow steps ``K`` per scale: one int for every level, or one per
            level, finest first (e.g. ``(4, 8)``: the coarse level, which decides the
            image's overall shape and has a quarter of the pixels, gets more steps).
        hidden_channels: width of the coupling conditioners: one int, or one per level.
        log_scale_bound: soft bound on each coupling's and split prior's log scale.

    Returns:
        A list of image bijectors for :class:`~flowinfer.flow.Flow` (``shape=shape``).

    Example:
        >>> layers = glow_layers((1, 8, 8), levels=2, steps_per_level=1, hidden_channels=8)
        >>> [type(t).__name__ for t in layers[:3]]
        ['Squeeze', 'MultiscaleSplit', 'ChannelCoupling']

    References:
        Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions".
    """
    c, h, w = check_image_shape(shape)
    check_int(levels, "levels")
    steps = _per_level(steps_per_level, levels, "steps_per_level")
    widths = _per_level(hidden_channels, levels, "hidden_channels")
    factor = 2 ** levels
    if h % factor or w % factor:
        raise ValueError(f"shape {shape!r} cannot be squeezed {levels} times: height and width "
                         f"must be divisible by 2**levels = {factor} (pad the images or use "
                         "fewer levels)")

    def level(s: tuple[int, int, int], index: int) -> list[Bijector]:
        squeezed = (4 * s[0], s[1] // 2, s[2] // 2)
        layers: list[Bijector] = [Squeeze(s)]
        if index + 1 < levels:
            kept = (squeezed[0] // 2, squeezed[1], squeezed[2])
            layers.append(MultiscaleSplit(squeezed, level(kept, index + 1), log_scale_bound))
        layers += _steps(squeezed, steps[index], widths[index], log_scale_bound)
        layers.append(Unsqueeze(squeezed))
        return layers

    return level((c, h, w), 0)
