"""The built-in flows: plain factory functions registered by name.

Each factory reads top to bottom as what the flow is made of. Defaults (5 layers, two hidden
layers of 64, 8 spline bins on [-5, 5]) fit 2-D toy densities in a minute on a laptop CPU and
are a sound start for guides up to a few dozen latent dimensions.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions.transforms as pyro_transforms
import torch
from torch import nn

from flowinfer.checks import check_bool, check_choice, check_int
from flowinfer.registry import register_flow
from flowinfer.transforms.autoregressive import Autoregressive
from flowinfer.transforms.base import ConditionalBijector
from flowinfer.transforms.coupling import Coupling, default_mask
from flowinfer.transforms.elementwise import ActNorm, ElementwiseAffine
from flowinfer.transforms.glow import glow_layers
from flowinfer.transforms.linear import LULinear
from flowinfer.transforms.permutation import permutation as make_permutation
from flowinfer.transforms.pyro_adapter import CorrectedSylvester, PyroTransform

__all__ = ["realnvp", "nsf", "maf", "iaf", "nsf_ar", "glow"]

_PERMUTATIONS = ("reverse", "random", "none")


def _wrap(layer: nn.Module, context_dim: int) -> nn.Module:
    return ConditionalBijector(layer) if context_dim else layer


def _check_permutation(kind: str) -> str:
    return check_choice(kind, "permutation", _PERMUTATIONS)


def _coupling_stack(
    dim: int, context_dim: int, num_layers: int, permutation: str, **layer_kwargs
) -> list[nn.Module]:
    check_int(num_layers, "num_layers")
    _check_permutation(permutation)
    layers: list[nn.Module] = []
    for i in range(num_layers):
        if i > 0 and dim > 1 and permutation != "none":
            layers.append(make_permutation(dim, permutation, seed=i))
        # Without a permutation, alternate which half conditions the other.
        flip = permutation == "none" and i % 2 == 1 and dim > 1
        mask = default_mask(dim, flip=flip)
        layers.append(_wrap(Coupling(dim, mask=mask, context_dim=context_dim, **layer_kwargs),
                            context_dim))
    return layers


def _orderings(dim: int, num_layers: int, permutation: str) -> list[torch.Tensor]:
    _check_permutation(permutation)
    natural = torch.arange(dim)
    if permutation == "none":
        return [natural] * num_layers
    if permutation == "reverse":
        return [natural if i % 2 == 0 else natural.flip(0) for i in range(num_layers)]
    generator = torch.Generator().manual_seed(0)
    return [natural] + [torch.randperm(dim, generator=generator) for _ in range(num_layers - 1)]


def _output_affine(dim: int, context_dim: int, hidden: Sequence[int]) -> list[nn.Module]:
    """An elementwise affine map after the splines, conditioned on the context when given.

    A spline is the identity outside its box ``[-bound, bound]`` with slope 1 at the edges, so
    a target much narrower than the base (a posterior against its z-scored prior) must put the
    base's tails in the outer bins, far out in the target's units: heavy tails. The affine
    map carries the target's location and scale, so the splines work at unit scale.
    """
    mask = torch.zeros(dim, dtype=torch.bool)  # nothing conditions but the context
    if context_dim:
        return [_wrap(Coupling(dim, mask=mask, context_dim=context_dim, element="affine",
                               hidden=hidden), context_dim)]
    return [ElementwiseAffine(dim)]


def _autoregressive_stack(
    dim: int, context_dim: int, num_layers: int, permutation: str, **layer_kwargs
) -> list[nn.Module]:
    # Alternating the MADE ordering equals a Permute between layers, without the gather.
    check_int(num_layers, "num_layers")
    return [
        _wrap(Autoregressive(dim, context_dim=context_dim, ordering=order, **layer_kwargs),
              context_dim)
        for order in _orderings(dim, num_layers, permutation)
    ]


@register_flow("realnvp")
def realnvp(
    dim: int,
    context_dim: int = 0,
    num_layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    log_scale_bound: float = 5.0,
    permutation: str = "reverse",
) -> list[nn.Module]:
    """RealNVP: affine coupling layers with permutations between them (Dinh et al. 2017)."""
    return _coupling_stack(dim, context_dim, num_layers, permutation, element="affine",
                           hidden=hidden, log_scale_bound=log_scale_bound)


@register_flow("nsf")
def nsf(
    dim: int,
    context_dim: int = 0,
    num_layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    bound: float = 5.0,
    permutation: str = "reverse",
    final_affine: bool = False,
) -> list[nn.Module]:
    """Neural spline flow, coupling form (NSF-C): rational-quadratic splines (Durkan 2019).

    ``final_affine=True`` ends the flow with an elementwise affine layer (conditioned on the
    context when there is one), so the spline box need not contain the target's scale.
    """
    layers = _coupling_stack(dim, context_dim, num_layers, permutation, element="spline",
                             hidden=hidden, bins=bins, bound=bound)
    if check_bool(final_affine, "final_affine"):
        layers += _output_affine(dim, context_dim, hidden)
    return layers


@register_flow("maf")
def maf(
    dim: int,
    context_dim: int = 0,
    num_layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    residual: bool = False,
    log_scale_bound: float = 5.0,
    permutation: str = "reverse",
) -> list[nn.Module]:
    """Masked autoregressive flow: one-pass log_prob, for density estimation (Papamakarios 2017)."""
    return _autoregressive_stack(dim, context_dim, num_layers, permutation, element="affine",
                                 direction="maf", hidden=hidden, residual=residual,
                                 log_scale_bound=log_scale_bound)


@register_flow("iaf")
def iaf(
    dim: int,
    context_dim: int = 0,
    num_layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    residual: bool = False,
    log_scale_bound: float = 5.0,
    permutation: str = "reverse",
) -> list[nn.Module]:
    """Inverse autoregressive flow: one-pass sampling and sample density (Kingma 2016)."""
    return _autoregressive_stack(dim, context_dim, num_layers, permutation, element="affine",
                                 direction="iaf", hidden=hidden, residual=residual,
                                 log_scale_bound=log_scale_bound)


@register_flow("nsf-ar")
def nsf_ar(
    dim: int,
    context_dim: int = 0,
    num_layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    bins: int = 8,
    bound: float = 5.0,
    direction: str = "maf",
    residual: bool = False,
    permutation: str = "reverse",
    final_affine: bool = False,
) -> list[nn.Module]:
    """Neural spline flow, autoregressive form (NSF-AR); direction 'maf' or 'iaf' (Durkan 2019).

    ``final_affine`` as for :func:`nsf`.
    """
    layers = _autoregressive_stack(dim, context_dim, num_layers, permutation, element="spline",
                                   direction=direction, hidden=hidden, bins=bins, bound=bound,
                                   residual=residual)
    if check_bool(final_affine, "final_affine"):
        layers += _output_affine(dim, context_dim, hidden)
    return layers


@register_flow("glow", description="Glow (Kingma & Dhariwal 2018): ActNorm, invertible "
               "linear map, affine coupling; shape=(C, H, W) builds the multiscale image Glow.")
def glow(
    dim: int,
    context_dim: int = 0,
    num_layers: int | None = None,
    hidden: Sequence[int] | None = None,
    log_scale_bound: float | None = None,
    shape: Sequence[int] | None = None,
    levels: int | None = None,
    steps_per_level: int | Sequence[int] | None = None,
    hidden_channels: int | Sequence[int] | None = None,
) -> list[nn.Module]:
    """Glow: ActNorm, LU-decomposed linear map, affine coupling (Kingma & Dhariwal 2018).

    Without ``shape`` it is the vector version on ``dim`` (``num_layers`` steps, MLP
    conditioners with ``hidden`` units, defaults 5 and (64, 64), log-scale bound 5). With
    ``shape=(C, H, W)`` it is the multiscale image Glow of
    :func:`~flowinfer.transforms.glow.glow_layers` (``levels`` scales, default 2, of
    ``steps_per_level`` steps, default 4, with convolutional conditioners of
    ``hidden_channels``, default 64, log-scale bound 3; either may be one value per level,
    finest first), unconditional.
    """
    if shape is None:
        image_only = {"levels": levels, "steps_per_level": steps_per_level,
                      "hidden_channels": hidden_channels}
        given = sorted(k for k, v in image_only.items() if v is not None)
        if given:
            raise ValueError(f"{given} apply to the image Glow only: pass shape=(C, H, W) "
                             "(or use num_layers/hidden for the vector Glow)")
        num_layers = 5 if num_layers is None else num_layers
        hidden = (64, 64) if hidden is None else hidden
        log_scale_bound = 5.0 if log_scale_bound is None else log_scale_bound
        check_int(num_layers, "num_layers")
        layers: list[nn.Module] = []
        for _ in range(num_layers):
            layers += [ActNorm(dim), LULinear(dim)]
            coupling = Coupling(dim, element="affine", hidden=hidden, context_dim=context_dim,
                                log_scale_bound=log_scale_bound)
            layers.append(_wrap(coupling, context_dim))
        return layers
    if context_dim:
        raise ValueError(f"the image Glow (shape={tuple(shape)}) takes no context, got "
                         f"context_dim={context_dim}")
    vector_only = {"num_layers": num_layers, "hidden": hidden}
    given = sorted(k for k, v in vector_only.items() if v is not None)
    if given:
        raise ValueError(f"{given} apply to the vector Glow only; with shape=... use levels, "
                         "steps_per_level and hidden_channels")
    return glow_layers(
        shape,
        levels=2 if levels is None else levels,
        steps_per_level=4 if steps_per_level is None else steps_per_level,
        hidden_channels=64 if hidden_channels is None else hidden_channels,
        log_scale_bound=3.0 if log_scale_bound is None else log_scale_bound,
    )


# --------------------------------------------------------------- Pyro's own transforms
def _pyro_stack(name: str, make, dim: int, num_layers: int, has_inverse: bool,
                permute: bool) -> list[nn.Module]:
    check_int(num_layers, "num_layers")
    layers: list[nn.Module] = []
    for i in range(num_layers):
        if permute and i > 0 and dim > 1:
            layers.append(make_permutation(dim, "reverse"))
        layers.append(PyroTransform(make(), dim, name, has_inverse=has_inverse))
    return layers


_NO_INVERSE = " No analytic inverse: for guides and reverse KL, not log_prob of data."


@register_flow("bnaf", has_inverse=False, supports_context=False,
               description="Block neural autoregressive flow, Pyro's (De Cao et al. 2019)."
               + _NO_INVERSE)
def bnaf(dim: int, context_dim: int = 0, num_layers: int = 1,
         hidden_factors: Sequence[int] = (8, 8)) -> list[nn.Module]:
    """Pyro's BlockAutoregressive layers with reversals between them."""
    return _pyro_stack("bnaf", lambda: pyro_transforms.block_autoregressive(
        dim, hidden_factors=list(hidden_factors)), dim, num_layers, False, permute=True)


@register_flow("planar", has_inverse=False, supports_context=False,
               description="Planar flow, Pyro's (Rezende & Mohamed 2015)." + _NO_INVERSE)
def planar(dim: int, context_dim: int = 0, num_layers: int = 8) -> list[nn.Module]:
    """Pyro's Planar transforms."""
    return _pyro_stack("planar", lambda: pyro_transforms.planar(dim), dim, num_layers, False,
                       permute=False)


@register_flow("radial", has_inverse=False, supports_context=False,
               description="Radial flow, Pyro's (Rezende & Mohamed 2015)." + _NO_INVERSE)
def radial(dim: int, context_dim: int = 0, num_layers: int = 8) -> list[nn.Module]:
    """Pyro's Radial transforms."""
    return _pyro_stack("radial", lambda: pyro_transforms.radial(dim), dim, num_layers, False,
                       permute=False)


@register_flow("sylvester", has_inverse=False, supports_context=False,
               description="Householder-Sylvester flow, Pyro's (van den Berg et al. 2018)."
               + _NO_INVERSE)
def sylvester(dim: int, context_dim: int = 0, num_layers: int = 4,
              count_transforms: int = 1) -> list[nn.Module]:
    """Pyro's Sylvester transforms, with the log-determinant corrected (see CorrectedSylvester)."""
    check_int(count_transforms, "count_transforms")
    return _pyro_stack("sylvester", lambda: CorrectedSylvester(dim, count_transforms),
                       dim, num_layers, False, permute=False)


@register_flow("householder", supports_context=False,
               description="Householder reflections, Pyro's (Tomczak & Welling 2016): a "
               "learnable rotation, useful after an affine base.")
def householder(dim: int, context_dim: int = 0, num_layers: int = 1,
                count_transforms: int | None = None) -> list[nn.Module]:
    """Pyro's Householder transforms (volume preserving, with an analytic inverse)."""
    count = dim if count_transforms is None else check_int(
        count_transforms, "count_transforms")
    return _pyro_stack("householder", lambda: pyro_transforms.householder(
        dim, count_transforms=count), dim, num_layers, True, permute=False)
