"""Rows of data for a flow: conversion, shape and finiteness checks, the context pairing."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from flowinfer.flow import Flow

__all__ = ["as_rows", "rows_and_context"]


def as_rows(value: Any, name: str, width: int | tuple[int, ...], like: Tensor) -> Tensor:
    """``value`` as a finite ``(n, width)`` (or ``(n, *shape)``) tensor with ``like``'s dtype
    and device; ``width`` is a tuple for image flows (``event_shape == (C, H, W)``)."""
    event = tuple(width) if isinstance(width, tuple) else (width,)
    want = f"(n, {', '.join(str(v) for v in event)})"
    # Casting would silently drop an imaginary part or turn booleans into 0/1 values.
    source_dtype = str(getattr(value, "dtype", ""))
    if "complex" in source_dtype or "bool" in source_dtype:
        raise TypeError(f"{name} must hold real numbers, got dtype {source_dtype}")
    try:
        rows = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{name} must be a numeric array or tensor of shape {want}, got "
            f"{type(value).__name__} ({err})"
        ) from None
    if len(event) > 1:
        if rows.dim() == 2 and rows.shape[1] == math.prod(event):
            hint = f"; reshape flattened images with {name}.reshape{(-1, *event)}"
        else:
            hint = ""
        if tuple(rows.shape[1:]) != event or rows.dim() != 1 + len(event):
            raise ValueError(f"{name} must be of shape {want} (the flow's event shape), got "
                             f"shape {tuple(rows.shape)}{hint}")
    elif rows.dim() != 2:
        hint = f"; for 1-D data use {name}.reshape(-1, 1)" if rows.dim() == 1 else ""
        raise ValueError(
            f"{name} must be 2-D of shape {want}, got shape {tuple(rows.shape)}{hint}"
        )
    elif rows.shape[1] != event[0]:
        raise ValueError(
            f"{name} must have {event[0]} columns (the flow's "
            f"{'dim' if name.endswith('data') else 'context_dim'}), got shape "
            f"{tuple(rows.shape)}"
        )
    if rows.shape[0] == 0:
        raise ValueError(f"{name} has no rows")
    bad = int((~torch.isfinite(rows)).reshape(rows.shape[0], -1).any(dim=1).sum())
    if bad:
        raise ValueError(
            f"{name} must be finite: {bad} of {rows.shape[0]} rows contain NaN or inf; "
            "drop or impute those rows first"
        )
    return rows


def _split_pair(value: Any, context: Any, flow: Flow, name: str) -> tuple[Any, Any]:
    # A conditional flow may take its data as one (x, context) pair.
    if flow.is_conditional and context is None and isinstance(value, tuple) and len(value) == 2:
        return value
    return value, context


def rows_and_context(
    value: Any, context: Any, flow: Flow, name: str, context_name: str
) -> tuple[Tensor, Tensor | None]:
    like = flow.base_loc
    value, context = _split_pair(value, context, flow, name)
    x = as_rows(value, name, tuple(flow.event_shape), like)
    if not flow.is_conditional:
        if context is not None:
            raise ValueError(
                f"{context_name} was given but the flow is unconditional (context_dim=0); "
                "build it with context_dim=... to condition on it"
            )
        return x, None
    if context is None:
        raise ValueError(
            f"{context_name} is required: the flow is conditional (context_dim="
            f"{flow.context_dim}); pass {context_name}=... of shape (n, {flow.context_dim}) "
            f"or {name}=(x, context)"
        )
    c = as_rows(context, context_name, flow.context_dim, like)
    if c.shape[0] != x.shape[0]:
        raise ValueError(
            f"{context_name} must have one row per row of {name}: got {c.shape[0]} rows "
            f"for {x.shape[0]}"
        )
    return x, c
