"""Simulate (parameters, data) pairs from a Pyro model, the way NPE trains on them.

``simulate`` runs the model's prior predictive in chunks. Each chunk is run *vectorised*
(the whole model inside one particle ``pyro.plate``, as ``pyro.infer.Predictive(parallel=True)``
does) when a probe shows that the model broadcasts correctly over that plate, and *looped*
(one plain run per draw) otherwise. The probe compares, for a few draws, the log density of
every site in the vectorised trace with a plain replay of the same values, so a model that
silently mixes particles (``theta[0]`` instead of ``theta[..., 0]``) is looped, not trusted.

Every chunk has its own seed derived from ``seed`` and the chunk's index, so the same seed
gives the same simulations whether the chunks run here, in ``num_workers`` processes or on a
user's executor (``executor=``: anything with ``submit(fn, *args)`` returning futures with
``.result()``, e.g. ``concurrent.futures`` pools or a ``dask.distributed.Client``; no
scheduler of our own). Draws whose data hold NaN or inf are dropped and counted; a draw whose
simulation raises is dropped and counted too (the chunk is then re-run one draw at a time).
With ``path=`` every finished chunk is appended to a file, so an interrupted campaign resumes
where it stopped.

Example:
    >>> import pyro, pyro.distributions as dist
    >>> def model():
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     pyro.sample("x", dist.Normal(mu[..., None], 0.5).expand([2]).to_event(1))
    >>> sims = simulate(model, "x", 100, seed=0)
    >>> len(sims), sims.latents["mu"].shape, sims.observed["x"].shape, sims.vectorized
    (100, torch.Size([100]), torch.Size([100, 2]), True)

References:
    Cranmer, Brehmer, Louppe (2020), "The frontier of simulation-based inference", PNAS.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import random
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from torch import Tensor

from flowinfer.checks import check_int
from flowinfer.npe.sites import ModelInfo, inspect_model

__all__ = ["Simulations", "simulate", "SimulationError"]

_FILE_FORMAT = "flowinfer-npe-simulations"
_PROBE = 4


class SimulationError(RuntimeError):
    """Every simulation of a run failed (the message shows the first error)."""


# ------------------------------------------------------------------------------ container
@dataclass
class Simulations:
    """Simulated pairs: ``latents[site]`` and ``observed[site]`` with a leading draw axis.

    Attributes:
        latents: ``{latent site: (N, *shape)}`` in the constrained space.
        observed: ``{observed site: (N, *shape)}``.
        num_nonfinite: draws dropped because their data held NaN or inf.
        num_failed: draws dropped because the simulation raised.
        num_chunks: chunks simulated so far (the next chunk's seed index).
        vectorized: whether the chunks ran vectorised (None: not simulated here).
    """

    latents: dict[str, Tensor]
    observed: dict[str, Tensor]
    num_nonfinite: int = 0
    num_failed: int = 0
    num_chunks: int = 0
    vectorized: bool | None = None
    errors: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        first = next(iter(self.latents.values()), None)
        return 0 if first is None else int(first.shape[0])

    def __repr__(self) -> str:
        return (f"Simulations({len(self)} draws, latents={list(self.latents)}, observed="
                f"{list(self.observed)}, dropped non-finite={self.num_nonfinite}, "
                f"failed={self.num_failed})")

    def extend(self, other: Simulations) -> Simulations:
        """A new container with ``other``'s draws after these (counts add up)."""
        cat = {k: torch.cat([v, other.latents[k]]) for k, v in self.latents.items()}
        obs = {k: torch.cat([v, other.observed[k]]) for k, v in self.observed.items()}
        return Simulations(cat, obs, self.num_nonfinite + other.num_nonfinite,
                           self.num_failed + other.num_failed,
                           self.num_chunks + other.num_chunks,
                           self.vectorized if other.vectorized is None else other.vectorized,
                           (self.errors + other.errors)[:5])

    def head(self, n: int) -> Simulations:
        """The first ``n`` draws (counts kept)."""
        return Simulations({k: v[:n] for k, v in self.latents.items()},
                           {k: v[:n] for k, v in self.observed.items()},
                           self.num_nonfinite, self.num_failed, self.num_chunks,
                           self.vectorized, self.errors)

    # -------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the simulations to ``path`` atomically (tensors and plain values only)."""
        path = Path(path)
        payload = {"format": _FILE_FORMAT, "latents": self.latents, "observed": self.observed,
                   "num_nonfinite": self.num_nonfinite, "num_failed": self.num_failed,
                   "num_chunks": self.num_chunks}
        folder = path.parent if str(path.parent) else Path(".")
        handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as f:
                torch.save(payload, f)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Simulations:
        """Read a file written by :meth:`save` (``weights_only`` loading: no code runs)."""
        payload = torch.load(Path(path), weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != _FILE_FORMAT:
            raise ValueError(f"{path} is not a flowinfer simulation file")
        return cls(payload["latents"], payload["observed"], int(payload["num_nonfinite"]),
                   int(payload["num_failed"]), int(payload["num_chunks"]))

    def check_against(self, info: ModelInfo, where: str = "simulations") -> None:
        """Raise ``ValueError`` unless the sites and shapes are those of ``info``'s model."""
        for kind, names, shapes, table in (
            ("latent", info.latent_names, info.latent_shapes, self.latents),
            ("observed", info.observed_names, info.observed_shapes, self.observed),
        ):
            if sorted(table) != sorted(names):
                raise ValueError(f"{where} hold {kind} sites {sorted(table)}, the model has "
                                 f"{sorted(names)}")
            for name in names:
                value = table[name]
                if not isinstance(value, Tensor):
                    raise TypeError(f"{where}: site {name!r} must be a tensor, got "
                                    f"{type(value).__name__}")
                if value.shape[1:] != shapes[name]:
                    raise ValueError(f"{where}: site {name!r} has draws of shape "
                                     f"{tuple(value.shape[1:])}, the model's site has shape "
                                     f"{tuple(shapes[name])}")
        sizes = {v.shape[0] for v in (*self.latents.values(), *self.observed.values())}
        if len(sizes) != 1:
            raise ValueError(f"{where}: the sites have different numbers of draws {sizes}")


# ------------------------------------------------------------------------------ seeds
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


def _chunk_seed(seed: int, index: int) -> int:
    # A fixed mix of (seed, index) into numpy's seed range; independent of worker count.
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


# ------------------------------------------------------------------------------ one chunk
@dataclass
class _Spec:
    """Everything a worker needs to run a chunk (picklable when the model is)."""

    model: Callable
    args: tuple
    kwargs: dict
    latent_names: list[str]
    observed_names: list[str]
    shapes: dict[str, torch.Size]
    particle_dim: int
    layouts: dict[str, torch.Size] | None = None  # per-site shape inside the particle plate


def _vectorized_trace(spec: _Spec, n: int, conditioned: dict[str, Tensor] | None):
    def plated(*args, **kwargs):
        with pyro.plate("_npe_particles", n, dim=spec.particle_dim):
            return spec.model(*args, **kwargs)

    fn = plated
    if conditioned:
        data = {k: v.reshape(n, *spec.layouts[k][1:]) for k, v in conditioned.items()}
        fn = poutine.condition(plated, data=data)
    return poutine.trace(fn).get_trace(*spec.args, **spec.kwargs)


def _run_vectorized(spec: _Spec, n: int, conditioned: dict[str, Tensor] | None):
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


def _run_one(spec: _Spec, conditioned: dict[str, Tensor] | None):
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


def _run_looped(spec: _Spec, n: int, conditioned: dict[str, Tensor] | None):
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


def _simulate_chunk(spec: _Spec, n: int, seed: int,
                    conditioned: dict[str, Tensor] | None) -> dict[str, Any]:
    """Run one chunk under its own seed; returns draws, drop counts and the mode used."""
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
def _probe_layouts(spec: _Spec) -> dict[str, torch.Size] | None:
    """Site shapes inside a particle plate if the model vectorises correctly, else None."""
    n = _PROBE
    try:
        with _seeded(12345), torch.no_grad():
            trace = _vectorized_trace(spec, n, None)
            trace.compute_log_prob()
            layouts, per_particle, values = {}, torch.zeros(n, dtype=torch.float64), {}
            for name, site in trace.nodes.items():
                if site["type"] != "sample" or name == "_npe_particles":
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
              vectorize: bool | None = None) -> _Spec:
    """The chunk runner's description of ``model``, with vectorisation probed."""
    spec = _Spec(model, tuple(args), dict(kwargs), list(info.latent_names),
                 list(info.observed_names), {**info.latent_shapes, **info.observed_shapes},
                 info.particle_dim)
    if vectorize is not False:
        spec.layouts = _probe_layouts(spec)
        if vectorize and spec.layouts is None:
            raise ValueError("vectorize=True, but the model does not broadcast correctly "
                             "over a particle plate (see flowinfer.npe.simulate)")
    return spec


@torch.no_grad()
def latent_log_prior(spec: _Spec, latents: dict[str, Tensor], chunk_size: int = 10_000
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


# ------------------------------------------------------------------------------ workers
_FORKED_SPEC: _Spec | None = None


def _worker_init() -> None:
    torch.set_num_threads(1)


def _forked_chunk(n: int, seed: int, conditioned: dict[str, Tensor] | None):
    return _simulate_chunk(_FORKED_SPEC, n, seed, conditioned)


@contextlib.contextmanager
def _executor(num_workers: int, executor: Any, spec: _Spec):
    """Yields ``submit(n, seed, conditioned) -> future-or-result`` for the chosen engine."""
    global _FORKED_SPEC
    if executor is not None:
        yield lambda n, s, c: executor.submit(_simulate_chunk, spec, n, s, c)
        return
    if num_workers == 0:
        yield lambda n, s, c: _simulate_chunk(spec, n, s, c)
        return
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods:
        # Forked workers inherit the spec, so models that cannot be pickled still work.
        _FORKED_SPEC = spec
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_worker_init) as pool:
            try:
                yield lambda n, s, c: pool.submit(_forked_chunk, n, s, c)
            finally:
                _FORKED_SPEC = None
        return
    with ProcessPoolExecutor(num_workers, initializer=_worker_init) as pool:
        yield lambda n, s, c: pool.submit(_simulate_chunk, spec, n, s, c)


def _result(item: Any) -> dict[str, Any]:
    return item.result() if hasattr(item, "result") else item


def _collect(done: Simulations, futures: list, bar: Any) -> Simulations:
    for fut in futures:
        res = _result(fut)
        got = Simulations(res["latents"], res["observed"], res["num_nonfinite"],
                          res["num_failed"], 1, res["vectorized"], res["errors"])
        done = done.extend(got)
        bar.update(len(got))
    return done


# ------------------------------------------------------------------------------ entry point
def simulate(
    model: Callable,
    observed: Any,
    num_simulations: int,
    *,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    latents: dict[str, Tensor] | None = None,
    seed: int | None = None,
    chunk_size: int | None = None,
    num_workers: int = 0,
    executor: Any = None,
    path: str | os.PathLike | None = None,
    vectorize: bool | None = None,
    progress: bool | None = None,
    info: ModelInfo | None = None,
    spec: _Spec | None = None,
) -> Simulations:
    """Simulate ``num_simulations`` (latents, data) pairs from ``model``.

    Args:
        model: a Pyro model that samples every site when run plainly.
        observed: the name (or list of names) of the data site(s).
        num_simulations: how many pairs; with ``path``, the total the file should hold
            (only the missing ones are simulated).
        model_args, model_kwargs: arguments of ``model``.
        latents: optional ``{latent site: (num_simulations, *shape)}`` values to simulate the
            data at (a proposal's draws) instead of drawing them from the prior.
        seed: base seed (None: drawn from torch's generator, so ``torch.manual_seed`` fixes
            it). Chunk ``k`` runs under a seed mixed from ``(seed, k)``.
        chunk_size: draws per chunk (the unit of vectorisation, of work for the workers and
            of saving); default ``min(1000, num_simulations)``.
        num_workers: worker processes for models that cannot be vectorised (0: this process).
        executor: an object with ``submit(fn, *args)`` returning futures (a
            ``concurrent.futures`` executor, a ``dask.distributed.Client``); its workers
            must be able to unpickle the model.
        path: a file that receives every finished chunk and is resumed from.
        vectorize: True to require vectorisation, False to always loop, None to probe.
        progress: a progress bar (None: only on a TTY).

    Returns:
        :class:`Simulations`.

    Raises:
        SimulationError: every draw failed.
    """
    from flowinfer.training import progress as progress_bar

    num_simulations = check_int(num_simulations, "num_simulations")
    chunk_size = check_int(chunk_size, "chunk_size", allow_none=True)
    chunk_size = chunk_size or min(1000, num_simulations)
    num_workers = check_int(num_workers, "num_workers", lowest=0)
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must have a submit(fn, *args) method, got "
                        f"{type(executor).__name__}")
    model_kwargs = model_kwargs or {}
    info = info or inspect_model(model, observed, model_args, model_kwargs)
    if latents is not None:
        if path is not None:
            raise ValueError("path= saves prior simulations only; do not combine it with "
                             "latents=")
        for name in info.latent_names:
            if name not in latents or latents[name].shape[0] < num_simulations:
                raise ValueError(f"latents must give site {name!r} with at least "
                                 f"{num_simulations} draws")
    if seed is None:
        seed = int(torch.randint(0, 2**62, ()).item())
    seed = check_int(seed, "seed", lowest=0)
    done = Simulations({k: torch.empty(0, *info.latent_shapes[k]) for k in info.latent_names},
                       {k: torch.empty(0, *info.observed_shapes[k])
                        for k in info.observed_names})
    if path is not None:
        path = Path(path)
        if path.exists():
            done = Simulations.load(path)
            done.check_against(info, where=str(path))
        elif not (path.parent if str(path.parent) else Path(".")).is_dir():
            raise FileNotFoundError(f"cannot write simulations to {path}: folder missing")
    spec = spec or make_spec(model, info, model_args, model_kwargs, vectorize)
    done.vectorized = spec.layouts is not None
    first_chunk = done.num_chunks
    bar = progress_bar(None, progress, total=num_simulations, desc="simulating")
    bar.update(len(done))
    window = (num_workers or 1) if executor is None else 8
    with _executor(num_workers, executor, spec) as submit:
        if latents is not None:
            # Fixed proposal draws: one pass over them; dropped draws are not replaced.
            bounds = list(range(0, num_simulations, chunk_size)) + [num_simulations]
            pieces = list(zip(bounds[:-1], bounds[1:], strict=True))
            for w in range(0, len(pieces), window):
                futures = [submit(b - a, _chunk_seed(seed, first_chunk + w + j),
                                  {k: latents[k][a:b] for k in info.latent_names})
                           for j, (a, b) in enumerate(pieces[w:w + window])]
                done = _collect(done, futures, bar)
        while latents is None and len(done) < num_simulations:
            # A few chunks in flight at a time, collected in order, so the file (and the
            # result for a given seed) does not depend on the number of workers.
            # Chunks are always full: chunk k's draws then depend on (seed, k) only, and the
            # result is the first num_simulations valid draws in chunk order.
            count = min(window, -(-(num_simulations - len(done)) // chunk_size))
            futures = [submit(chunk_size, _chunk_seed(seed, done.num_chunks + j), None)
                       for j in range(count)]
            done = _collect(done, futures, bar)
            if path is not None:
                done.save(path)
            if len(done) == 0 and done.num_failed + done.num_nonfinite >= min(
                    num_simulations, 2 * chunk_size):
                break
    bar.close()
    if len(done) == 0:
        detail = f"; first error: {done.errors[0]}" if done.errors else ""
        raise SimulationError(
            f"every simulation failed ({done.num_failed} raised, {done.num_nonfinite} gave "
            f"NaN/inf data){detail}")
    if latents is None and len(done) > num_simulations and path is None:
        done = done.head(num_simulations)
    return done
