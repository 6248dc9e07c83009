"""The built-in targets by name: :func:`make_target` and :func:`available_targets`.

Example:
    >>> available_targets()[:4]
    ['u1', 'u2', 'u3', 'u4']
"""

from __future__ import annotations

from flowinfer.checks import check_choice
from flowinfer.data.targets.base import Target
from flowinfer.data.targets.curved import Banana, Funnel
from flowinfer.data.targets.energies import energy
from flowinfer.data.targets.mixtures import gmm40, ring_of_gaussians

__all__ = ["available_targets", "make_target"]

_FACTORIES = {
    "u1": lambda: energy("U1"),
    "u2": lambda: energy("U2"),
    "u3": lambda: energy("U3"),
    "u4": lambda: energy("U4"),
    "banana": Banana,
    "funnel": Funnel,
    "ring8": ring_of_gaussians,
    "gmm40": gmm40,
}


def available_targets() -> list[str]:
    """Names accepted by :func:`make_target`.

    Example:
        >>> "funnel" in available_targets()
        True
    """
    return list(_FACTORIES)


def make_target(name: str) -> Target:
    """A built-in target with its default settings, by name (see :func:`available_targets`).

    Args:
        name: one of :func:`available_targets` (case does not matter).

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: an unknown name.

    Example:
        >>> make_target("banana").dim
        2
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {available_targets()}, got "
                        f"{type(name).__name__}")
    key = check_choice(name.lower(), "name", tuple(_FACTORIES))
    return _FACTORIES[key]()
