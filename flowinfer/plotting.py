"""Figures for 2-D flows: density heat maps, samples, loss curves and the layer-by-layer panel.

matplotlib is optional (``pip install "flowinfer[plot]"``) and imported only inside these
functions. Figures are built with ``matplotlib.figure.Figure`` rather than ``pyplot``, so they
work under any backend (Agg on a headless machine), hold no global state and need no
``plt.close``; Jupyter shows a returned figure, and ``fig.savefig(path)`` writes it. Every
function takes an optional ``ax`` to draw into an existing figure and returns the Figure.

Example:
    >>> import flowinfer as fi
    >>> flow = fi.build_flow("nsf", dim=2, num_layers=2, hidden=(16,))
    >>> fig = plot_density(flow, resolution=50)
    >>> type(fig).__name__
    'Figure'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from flowinfer.checks import check_bool, check_callable, check_int, is_number
from flowinfer.flow import Flow
from flowinfer.train.state import FitResult

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_density", "plot_samples", "plot_loss", "plot_layers", "plot_target_vs_flow"]

Bounds = Sequence[Sequence[float]]
_EVAL_BATCH = 16384


# ------------------------------------------------------------------------------ helpers
def _matplotlib():
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "flowinfer.plotting needs matplotlib: pip install \"flowinfer[plot]\" "
            "(or pip install matplotlib)"
        ) from None
    return matplotlib, Figure


def _figure_and_axes(ax: Axes | None, figsize: tuple[float, float] = (4.5, 4.0)):
    if ax is not None:
        return ax.get_figure(), ax
    _, Figure = _matplotlib()
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _check_flow(flow: Any, need_2d: bool = True) -> Flow:
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a flowinfer Flow, got {type(flow).__name__}")
    if need_2d and flow.dim != 2:
        raise ValueError(f"flow must be 2-D for this plot, got dim={flow.dim}")
    return flow


def _check_bounds(bounds: Any, name: str = "bounds") -> tuple[tuple[float, float], ...]:
    want = f"{name} must be ((xmin, xmax), (ymin, ymax)) with finite min < max"
    try:
        pairs = tuple(tuple(pair) for pair in bounds)
    except TypeError:
        raise TypeError(f"{want}, got {type(bounds).__name__} {bounds!r}") from None
    # Numbers, numpy scalars and one-element tensors (rows of a (2, 2) tensor) are accepted.
    if not all(is_number(v) or (isinstance(v, Tensor) and v.numel() == 1
                                and v.dtype.is_floating_point) for pair in pairs for v in pair):
        raise TypeError(f"{want}, got {bounds!r}")
    pairs = tuple(tuple(float(v) for v in pair) for pair in pairs)
    if len(pairs) != 2 or not all(
        len(pair) == 2 and math.isfinite(pair[0]) and math.isfinite(pair[1])
        and pair[0] < pair[1] for pair in pairs
    ):
        raise ValueError(f"{want}, got {bounds!r}")
    return pairs


def _grid(bounds: tuple[tuple[float, float], ...], resolution: int, like: Tensor) -> Tensor:
    (x0, x1), (y0, y1) = bounds
    xs = torch.linspace(x0, x1, resolution, dtype=like.dtype, device=like.device)
    ys = torch.linspace(y0, y1, resolution, dtype=like.dtype, device=like.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # rows follow y, as imshow expects
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


def _context_rows(flow: Flow, context: Any, n: int) -> Tensor | None:
    if not flow.is_conditional:
        if context is not None:
            raise ValueError("context was given but the flow is unconditional")
        return None
    if context is None:
        raise ValueError(f"context is required for a conditional flow: a vector of "
                         f"{flow.context_dim} numbers")
    c = torch.as_tensor(context, dtype=flow.base_loc.dtype, device=flow.base_loc.device)
    if c.shape != (flow.context_dim,):
        raise ValueError(f"context must be one vector of shape ({flow.context_dim},), got "
                         f"shape {tuple(c.shape)}")
    return c.expand(n, flow.context_dim)


@torch.no_grad()
def _log_prob_grid(flow: Flow, points: Tensor, context: Tensor | None) -> Tensor:
    parts = []
    for start in range(0, points.shape[0], _EVAL_BATCH):
        c = None if context is None else context[start:start + _EVAL_BATCH]
        parts.append(flow.log_prob(points[start:start + _EVAL_BATCH], c))
    return torch.cat(parts)


def _heat_map(ax: Axes, values: Tensor, bounds, resolution: int, log: bool, title: str,
              cmap: str):
    image = values.reshape(resolution, resolution).double()
    if log:
        finite = image[torch.isfinite(image)]
        floor = float(finite.min()) if finite.numel() else -1e3
        image = image.nan_to_num(nan=floor, neginf=floor)
    else:
        image = torch.exp(image).nan_to_num(nan=0.0)
    (x0, x1), (y0, y1) = bounds
    ax.imshow(image.cpu().numpy(), origin="lower", extent=(x0, x1, y0, y1), aspect="auto",
              cmap=cmap, interpolation="nearest")
    ax.set_title(title)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


# ------------------------------------------------------------------------------ plots
def plot_density(
    flow: Flow,
    bounds: Bounds = ((-4.0, 4.0), (-4.0, 4.0)),
    resolution: int = 200,
    ax: Axes | None = None,
    context: Any = None,
    log: bool = False,
    cmap: str = "viridis",
) -> Figure:
    """Heat map of a 2-D flow's density ``q(x)`` (or ``log q(x)``) on a grid.

    Args:
        flow: a 2-D flow with an analytic inverse.
        bounds: ``((xmin, xmax), (ymin, ymax))`` of the grid.
        resolution: grid points per axis.
        ax: axes to draw into (default: a new figure).
        context: for a conditional flow, one context vector of ``context_dim`` numbers.
        log: show ``log q`` instead of ``q`` (reveals the tails).
        cmap: matplotlib colour map.

    Returns:
        The matplotlib Figure.

    Example:
        >>> import flowinfer as fi
        >>> fig = plot_density(fi.build_flow("maf", dim=2, num_layers=1), resolution=20)
        >>> len(fig.axes)
        1
    """
    flow = _check_flow(flow)
    pairs = _check_bounds(bounds)
    resolution = check_int(resolution, "resolution", 2)
    log = check_bool(log, "log")
    points = _grid(pairs, resolution, flow.base_loc)
    values = _log_prob_grid(flow, points, _context_rows(flow, context, points.shape[0]))
    fig, ax = _figure_and_axes(ax)
    _heat_map(ax, values, pairs, resolution, log, "flow log density" if log else "flow density",
              cmap)
    return fig


def plot_samples(
    samples_or_flow: Flow | Tensor | Any,
    n: int = 2000,
    ax: Axes | None = None,
    context: Any = None,
    bounds: Bounds | None = None,
    title: str | None = None,
    **scatter_kwargs: Any,
) -> Figure:
    """Scatter plot of ``n`` samples of a 2-D flow, or of given points.

    Args:
        samples_or_flow: a flow (``n`` samples are drawn) or an ``(m, 2)`` array or tensor
            (plotted as given; for more than two columns the first two are shown).
        n: number of samples drawn from a flow.
        ax: axes to draw into (default: a new figure).
        context: for a conditional flow, one context vector.
        bounds: axis limits ``((xmin, xmax), (ymin, ymax))`` (default: matplotlib's).
        title: panel title (default: "flow samples" or "data").
        **scatter_kwargs: passed to ``ax.scatter`` (defaults: ``s=2, alpha=0.5``).

    Example:
        >>> import flowinfer as fi
        >>> fig = plot_samples(fi.build_flow("realnvp", dim=2, num_layers=1), n=100)
        >>> fig.axes[0].get_title()
        'flow samples'
    """
    if isinstance(samples_or_flow, Flow):
        flow = _check_flow(samples_or_flow, need_2d=False)
        n = check_int(n, "n")
        points = flow.sample((n,), context=_context_rows(flow, context, n))
        default_title = "flow samples"
    else:
        try:
            points = torch.as_tensor(samples_or_flow).detach()
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                "samples_or_flow must be a Flow or an (m, 2) array of points, got "
                f"{type(samples_or_flow).__name__}"
            ) from None
        default_title = "data"
    if points.dim() != 2 or points.shape[-1] < 2:
        raise ValueError(f"samples must have shape (m, 2) or more columns, got "
                         f"{tuple(points.shape)}")
    xy = points[:, :2].double().cpu().numpy()
    fig, ax = _figure_and_axes(ax)
    style = {"s": 2, "alpha": 0.5, "linewidths": 0} | scatter_kwargs
    ax.scatter(xy[:, 0], xy[:, 1], **style)
    if bounds is not None:
        (x0, x1), (y0, y1) = _check_bounds(bounds)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
    ax.set_aspect("equal", adjustable="datalim" if bounds is None else "box")
    ax.set_title(default_title if title is None else title)
    return fig


def plot_loss(result: FitResult | dict[str, Sequence[float]], ax: Axes | None = None,
              log_y: bool = False) -> Figure:
    """Training (and validation) loss per epoch of a fit, with the best epoch marked.

    Args:
        result: a :class:`~flowinfer.train.FitResult` or its ``history`` dictionary.
            ``train_loss``/``val_loss`` curves (``fit_density``) or ``loss`` and
            ``smoothed_loss`` (``fit_reverse_kl``) are drawn.
        ax: axes to draw into (default: a new figure).
        log_y: logarithmic loss axis.

    Example:
        >>> from flowinfer.train import FitResult
        >>> fig = plot_loss(FitResult({"train_loss": [3.0, 2.0], "val_loss": [3.1, 2.2]}, 1))
        >>> [line.get_label() for line in fig.axes[0].get_lines()][:2]
        ['train', 'validation']
    """
    if isinstance(result, FitResult):
        history, best_epoch = result.history, result.best_epoch
    elif isinstance(result, dict):
        history, best_epoch = result, None
    else:
        raise TypeError(f"result must be a FitResult or a history dict, got "
                        f"{type(result).__name__}")
    curves = [(key, label) for key, label in (
        ("train_loss", "train"), ("val_loss", "validation"),
        ("loss", "loss"), ("smoothed_loss", "running mean"),
    ) if history.get(key)]
    if not curves:
        raise ValueError(
            "result has no loss curve (expected 'train_loss', 'val_loss' or 'loss' in its "
            f"history; found {sorted(history)})"
        )
    log_y = check_bool(log_y, "log_y")
    fig, ax = _figure_and_axes(ax, figsize=(5.0, 3.5))
    for key, label in curves:
        ax.plot(range(len(history[key])), history[key], label=label, linewidth=1.2)
    if best_epoch is not None:
        ax.axvline(best_epoch, color="gray", linestyle=":", linewidth=1, label="best")
    ax.set_xlabel("epoch" if "train_loss" in history else "step")
    ax.set_ylabel("negative log-likelihood (nats)" if "train_loss" in history else "loss")
    if log_y:
        ax.set_yscale("log")
    ax.legend(frameon=False)
    return fig


def plot_layers(
    flow: Flow,
    n: int = 2000,
    bounds: Bounds | None = None,
    context: Any = None,
    skip_static: bool = True,
    ncols: int = 5,
) -> Figure:
    """Base samples pushed through the flow, one panel per layer (the RealNVP illustration).

    Points are coloured by their angle in the base space, so each panel shows where a
    region of the base ends up after that layer. Layers without trainable parameters
    (permutations) are folded into the next panel when ``skip_static`` is set.

    Args:
        flow: a flow of dim >= 2 (the first two coordinates are drawn).
        n: number of base samples.
        bounds: shared axis limits for every panel (default: each panel its own).
        context: for a conditional flow, one context vector.
        skip_static: leave out panels after parameter-free layers.
        ncols: panels per row.

    Example:
        >>> import flowinfer as fi
        >>> flow = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(8,))
        >>> len(plot_layers(flow, n=50).axes)  # base, coupling, coupling
        3

    References:
        Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP", ICLR
        (figure 1).
    """
    flow = _check_flow(flow, need_2d=False)
    if flow.dim < 2:
        raise ValueError(f"flow must have dim >= 2 for plot_layers, got dim={flow.dim}")
    n = check_int(n, "n")
    ncols = check_int(ncols, "ncols")
    skip_static = check_bool(skip_static, "skip_static")
    pairs = None if bounds is None else _check_bounds(bounds)
    c = _context_rows(flow, context, n)
    with torch.no_grad():
        z = flow.base_distribution(c).sample(() if c is not None else (n,))
        stages = flow.transform_with_intermediates(z, c)
    keep = [0] + [
        i + 1 for i, layer in enumerate(flow.layers)
        if not skip_static or i == len(flow.layers) - 1
        or any(p.requires_grad for p in layer.parameters())
    ]
    names = ["base"] + [f"{i}: {type(layer).__name__}" for i, layer in enumerate(flow.layers)]
    base = stages[0][:, :2].double()
    colour = torch.atan2(base[:, 1], base[:, 0]).cpu().numpy()

    _, Figure = _matplotlib()
    cols = min(ncols, len(keep))
    rows = math.ceil(len(keep) / cols)
    fig = Figure(figsize=(2.6 * cols, 2.6 * rows), layout="constrained")
    for panel, index in enumerate(keep):
        ax = fig.add_subplot(rows, cols, panel + 1)
        xy = stages[index][:, :2].double().cpu().numpy()
        ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap="hsv", s=1.5, alpha=0.6, linewidths=0)
        if pairs is not None:
            ax.set_xlim(*pairs[0])
            ax.set_ylim(*pairs[1])
        ax.set_title(names[index], fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def plot_target_vs_flow(
    log_density_fn: Callable[[Tensor], Tensor],
    flow: Flow,
    bounds: Bounds = ((-4.0, 4.0), (-4.0, 4.0)),
    resolution: int = 200,
    log: bool = False,
    cmap: str = "viridis",
) -> Figure:
    """Two heat maps side by side: an (unnormalized) target density and the flow's density.

    The target is normalised on the grid for display (its constant is unknown), so the two
    panels share a scale when the grid covers the target's mass.

    Args:
        log_density_fn: ``f(x) -> (m,)`` log density up to a constant, or an object with a
            ``log_prob`` method (a :mod:`flowinfer.data.targets` target, another flow).
        flow: a 2-D flow.
        bounds: ``((xmin, xmax), (ymin, ymax))`` of the grid.
        resolution: grid points per axis.
        log: show log densities.
        cmap: matplotlib colour map.

    Example:
        >>> import flowinfer as fi
        >>> flow = fi.build_flow("realnvp", dim=2, num_layers=1, hidden=(8,))
        >>> fig = plot_target_vs_flow(lambda x: -0.5 * (x**2).sum(-1), flow, resolution=20)
        >>> [a.get_title() for a in fig.axes]
        ['target', 'flow']
    """
    flow = _check_flow(flow)
    fn = check_callable(getattr(log_density_fn, "log_prob", log_density_fn), "log_density_fn")
    pairs = _check_bounds(bounds)
    resolution = check_int(resolution, "resolution", 2)
    log = check_bool(log, "log")
    points = _grid(pairs, resolution, flow.base_loc)
    with torch.no_grad():
        target = torch.cat([fn(points[s:s + _EVAL_BATCH])
                            for s in range(0, points.shape[0], _EVAL_BATCH)])
    if not isinstance(target, Tensor) or target.shape != points.shape[:1]:
        raise ValueError(f"log_density_fn must return one value per point, shape "
                         f"({points.shape[0]},) here, got {tuple(getattr(target, 'shape', ()))}")
    target = target.double()
    cell = (pairs[0][1] - pairs[0][0]) * (pairs[1][1] - pairs[1][0]) / (resolution - 1) ** 2
    # Normalise on the grid: log Z ~= logsumexp(log p~) + log(cell area).
    target = target - (torch.logsumexp(target.nan_to_num(nan=-math.inf), 0) + math.log(cell))
    values = _log_prob_grid(flow, points, None)

    _, Figure = _matplotlib()
    fig = Figure(figsize=(8.5, 4.0), layout="constrained")
    for i, (vals, title) in enumerate(((target, "target"), (values, "flow"))):
        _heat_map(fig.add_subplot(1, 2, i + 1), vals, pairs, resolution, log, title, cmap)
    return fig
