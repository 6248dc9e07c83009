"""One chunk of simulations: its seed, a vectorised or looped run, the vectorisation probe.

A chunk runs the whole model inside one particle ``pyro.plate`` when :func:`make_spec`'s
probe showed that the model broadcasts correctly over it; otherwise (or when a vectorised
chunk raises) it runs one plain trace per draw, and a draw that raises is dropped and
counted. The probe compares, for a few draws, the log density of every site in the
vectorised trace with a plain replay of the same values.

Example:
    >>> import pyro, pyro.distributions as dist
    >>> from flowinfer.npe.sites import inspect_model
    >>> def model():
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     pyro.sample("x", dist.Normal(mu, 1.0))
    >>> spec = make_spec(model, inspect_model(model, "x"), (), {})
    >>> spec.layouts is not None
    True
    >>> out = simulate_chunk(spec, 5, seed=0, conditioned=None)
    >>> out["latents"]["mu"].shape, out["num_failed"]
    (torch.Size([5]), 0)

References:
    Bingham et al. (2019), "Pyro: Deep Universal Probabilistic Programming", JMLR
    (``plate``, ``condition`` and ``trace``, as ``Predictive(parallel=True)`` uses them).
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor

from flowinfer.npe.sites import ModelInfo

__all__ = ["ChunkSpec", "make_spec", "simulate_chunk", "chunk_seed", "latent_log_prior"]

_PROBE = 4
_LOCK = threading.RLock()


@contextlib.contextmanager
def _seeded(seed: int):
    # Chunks must not disturb the caller's random streams, and must not depend on them.
    state = (torch.random.get_rng_state(), random.getstate(), np.random.get_state())
    try:
        pyro.set_rng_seed(seed)
        yield
    finally:
        torch.random.set_rng_state(state[0])
        random.setstate(state[1])
        np.random.set_state(state[2])


def chunk_seed(seed: int, index: int) -> int:
    # A fixed mix of (seed, index) into numpy's seed range; independent of worker count.
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


# ------------------------------------------------------------------------------ one chunk
@dataclass
class ChunkSpec:
    """Everything a worker needs to run a chunk (picklable when the model is)."""

    model: Callable
    args: tuple
    kwargs: dict
    latent_names: list[str]
    observed_names: list[str]
    shapes: dict[str, torch.Size]  # latent, observed and nuisance sites
    particle_dim: int
    layouts: dict[str, torch.Size] | None = None  # per-site shape inside the particle plate


def _vectorized_trace(spec: ChunkSpec, n: int, conditioned: dict[str, Tensor] | None):
    def plated(*args, **kwargs):
        with pyro.plate("_npe_particles", n, dim=spec.particle_dim):
            return spec.model(*args, **kwargs)

    fn = plated
    if conditioned:
        data = {k: v.reshape(n, *spec.layouts[k][1:]) for k, v in conditioned.items()}
        fn = poutine.condition(plated, data=data)
    return poutine.trace(fn).get_trace(*spec.args, **spec.kwargs)


def _run_vectorized(spec: ChunkSpec, n: int, conditioned: dict[str, Tensor] | None):
    trace = _vectorized_trace(spec, n, conditioned)
    out = {}
    for name in (*spec.latent_names, *spec.observed_names):
        value = trace.nodes[name]["value"]
        want = (n, *spec.shapes[name])
        if value.numel() != math.prod(want):
            raise ValueError(f"site {name!r} has shape {tuple(value.shape)} under the "
                             f"particle plate, expected {want}")
        out[name] = value.reshape(want)
    return out


def _run_one(spec: ChunkSpec, conditioned: dict[str, Tensor] | None):
    fn = poutine.condition(spec.model, data=conditioned) if conditioned else spec.model
    trace = poutine.trace(fn).get_trace(*spec.args, **spec.kwargs)
    out = {}
    for name in (*spec.latent_names, *spec.observed_names):
        if name not in trace.nodes:
            raise ValueError(f"site {name!r} was not sampled on this run")
        value = trace.nodes[name]["value"]
        if value.shape != spec.shapes[name]:
            raise ValueError(f"site {name!r} has shape {tuple(value.shape)} on this run, "
                             f"expected {tuple(spec.shapes[name])}")
        out[name] = value
    return out


def _run_looped(spec: ChunkSpec, n: int, conditioned: dict[str, Tensor] | None):
    rows, failed, errors = [], 0, []
    for i in range(n):
        cond = None if conditioned is None else {k: v[i] for k, v in conditioned.items()}
        try:
            rows.append(_run_one(spec, cond))
        except Exception as err:  # noqa: BLE001 - a failing draw is dropped and counted
            failed += 1
            if len(errors) < 3:
                first = (str(err).strip().splitlines() or [""])[0]
                errors.append(f"{type(err).__name__}: {first}")
    names = (*spec.latent_names, *spec.observed_names)
    if rows:
        out = {k: torch.stack([r[k] for r in rows]) for k in names}
    else:
        out = {k: torch.empty(0, *spec.shapes[k]) for k in names}
    return out, failed, errors


def simulate_chunk(spec: ChunkSpec, n: int, seed: int,
                    conditioned: dict[str, Tensor] | None) -> dict[str, Any]:
    """Run one chunk under its own seed; returns draws, drop counts and the mode used."""
    # Pyro draws from the process-wide generators, so chunks run one at a time in a process
    # (thread-pool executors); separate processes run in parallel.
    with _LOCK:
        return _simulate_chunk_locked(spec, n, seed, conditioned)


def _simulate_chunk_locked(spec: ChunkSpec, n: int, seed: int,
                           conditioned: dict[str, Tensor] | None) -> dict[str, Any]:
    failed, errors, vectorized = 0, [], spec.layouts is not None
    # Validation off: a NaN parameter would make Pyro raise, but such draws are dropped
    # and counted as non-finite below, as documented.
    with _seeded(seed), torch.no_grad(), pyro.validation_enabled(False):
        out = None
        if vectorized:
            try:
                out = _run_vectorized(spec, n, conditioned)
            except Exception:  # noqa: BLE001 - some draw raised: find it one by one
                out = None
        if out is None:
            out, failed, errors = _run_looped(spec, n, conditioned)
            vectorized = False
    keep = torch.ones(next(iter(out.values())).shape[0], dtype=torch.bool)
    for name in (*spec.latent_names, *spec.observed_names):
        value = out[name]
        if value.is_floating_point() or value.is_complex():
            keep &= torch.isfinite(value).reshape(value.shape[0], -1).all(-1)
    nonfinite = int((~keep).sum())
    split = {k: v[keep] for k, v in out.items()}
    return {"latents": {k: split[k] for k in spec.latent_names},
            "observed": {k: split[k] for k in spec.observed_names},
            "num_nonfinite": nonfinite, "num_failed": failed, "errors": errors,
            "vectorized": vectorized}


# ------------------------------------------------------------------------------ probing
def _probe_layouts(spec: ChunkSpec) -> dict[str, torch.Size] | None:
    """Site shapes inside a particle plate if the model vectorises correctly, else None."""
    n = _PROBE
    try:
        with _seeded(12345), torch.no_grad():
            trace = _vectorized_trace(spec, n, None)
            trace.compute_log_prob()
            layouts, per_particle, values = {}, torch.zeros(n, dtype=torch.float64), {}
            for name, site in trace.nodes.items():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                value, lp = site["value"], site["log_prob"]
                if lp.dim() == 0 or lp.shape[0] != n:
                    return None  # a site that does not vary over particles
                per_particle += lp.reshape(n, -1).sum(-1).double()
                if name in spec.shapes:
                    if value.numel() != n * math.prod(spec.shapes[name]):
                        return None
                    layouts[name] = value.shape
                values[name] = value
            for i in range(n):
                # Sites the model observes itself keep their data; the others get draw i.
                data = {name: value.reshape(n, *spec.shapes[name])[i]
                        for name, value in values.items() if name in spec.shapes}
                replay = poutine.trace(poutine.condition(spec.model, data=data)).get_trace(
                    *spec.args, **spec.kwargs)
                plain = float(replay.log_prob_sum())
                vec = float(per_particle[i])
                if not math.isclose(plain, vec, rel_tol=1e-4, abs_tol=1e-3):
                    return None
    except Exception:  # noqa: BLE001 - any failure means: loop instead
        return None
    return layouts


def make_spec(model: Callable, info: ModelInfo, args: tuple, kwargs: dict,
              vectorize: bool | None = None) -> ChunkSpec:
    """The chunk runner's description of ``model``, with vectorisation probed."""
    # The nuisance sites' shapes let the probe replay a whole vectorised draw.
    spec = ChunkSpec(model, tuple(args), dict(kwargs), list(info.latent_names),
                     list(info.observed_names),
                     {**info.nuisance_shapes, **info.latent_shapes, **info.observed_shapes},
                     info.particle_dim)
    if vectorize is not False:
        spec.layouts = _probe_layouts(spec)
        if vectorize and spec.layouts is None:
            raise ValueError("vectorize=True, but the model does not broadcast correctly "
                             "over a particle plate (see flowinfer.npe.simulate)")
    return spec


@torch.no_grad()
def latent_log_prior(spec: ChunkSpec, latents: dict[str, Tensor], chunk_size: int = 10_000
                     ) -> Tensor:
    """``(N,)`` prior log density of latent values (the model's latent sites, conditioned).

    The model runs with the latents fixed (vectorised when it allows, else draw by draw);
    the observed sites are simulated along but not counted.
    """
    n_total = next(iter(latents.values())).shape[0]
    out = []
    with pyro.validation_enabled(False):
        for a in range(0, n_total, chunk_size):
            piece = {k: v[a:a + chunk_size] for k, v in latents.items()}
            n = next(iter(piece.values())).shape[0]
            if spec.layouts is not None:
                trace = _vectorized_trace(spec, n, piece)
                total = torch.zeros(n, dtype=torch.float64)
                for name in spec.latent_names:
                    site = trace.nodes[name]
                    lp = site["fn"].log_prob(site["value"])
                    total += lp.reshape(n, -1).sum(-1).double()
                out.append(total)
                continue
            rows = []
            for i in range(n):
                fn = poutine.condition(spec.model, data={k: v[i] for k, v in piece.items()})
                trace = poutine.trace(fn).get_trace(*spec.args, **spec.kwargs)
                rows.append(sum(trace.nodes[k]["fn"].log_prob(trace.nodes[k]["value"]).sum()
                                for k in spec.latent_names))
            out.append(torch.stack(rows).double())
    return torch.cat(out).to(torch.get_default_dtype())
