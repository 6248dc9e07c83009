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
    >>> import pyro, pyro.distributions as dist, torch
    >>> def model():
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     pyro.sample("x", dist.Normal(torch.stack([mu, 2 * mu], -1), 0.5).to_event(1))
    >>> sims = simulate(model, "x", 100, seed=0)
    >>> len(sims), sims.latents["mu"].shape, sims.observed["x"].shape, sims.vectorized
    (100, torch.Size([100]), torch.Size([100, 2]), True)

References:
    Cranmer, Brehmer, Louppe (2020), "The frontier of simulation-based inference", PNAS.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flowinfer.checks import check_int
from flowinfer.npe.chunks import ChunkSpec, chunk_seed, make_spec, simulate_chunk
from flowinfer.npe.simulations import Simulations
from flowinfer.npe.sites import ModelInfo, inspect_model

__all__ = ["Simulations", "simulate", "SimulationError"]


class SimulationError(RuntimeError):
    """Every simulation of a run failed (the message shows the first error)."""


# ------------------------------------------------------------------------------ workers
_FORKED_SPEC: ChunkSpec | None = None


def _worker_init() -> None:
    torch.set_num_threads(1)


def _forked_chunk(n: int, seed: int, conditioned: dict[str, Tensor] | None):
    return simulate_chunk(_FORKED_SPEC, n, seed, conditioned)


@contextlib.contextmanager
def _executor(num_workers: int, executor: Any, spec: ChunkSpec):
    """Yields ``submit(n, seed, conditioned) -> future-or-result`` for the chosen engine."""
    global _FORKED_SPEC
    if executor is not None:
        yield lambda n, s, c: executor.submit(simulate_chunk, spec, n, s, c)
        return
    if num_workers == 0:
        yield lambda n, s, c: simulate_chunk(spec, n, s, c)
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
        yield lambda n, s, c: pool.submit(simulate_chunk, spec, n, s, c)


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
    spec: ChunkSpec | None = None,
    latent_names: str | list[str] | None = None,
) -> Simulations:
    """Simulate ``num_simulations`` (latents, data) pairs from ``model``.

    Args:
        model: a Pyro model that samples every site when run plainly.
        observed: the name (or list of names) of the data site(s).
        num_simulations: how many pairs; with ``path``, the total the file should hold
            (only the missing ones are simulated, in whole chunks, so the file may hold a
            few more; the first ``num_simulations`` are returned).
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
        info, spec: the model's sites and chunk runner when the caller has them (NPE).
        latent_names: the latent sites to keep (default: every free site not observed);
            other free sites are simulated along and dropped, as ``NPE(latents=...)``.

    Returns:
        :class:`Simulations`.

    Raises:
        SimulationError: every draw failed.
    """
    from flowinfer.train.optim import progress as progress_bar

    num_simulations = check_int(num_simulations, "num_simulations")
    chunk_size = check_int(chunk_size, "chunk_size", allow_none=True)
    chunk_size = chunk_size or min(1000, num_simulations)
    num_workers = check_int(num_workers, "num_workers", lowest=0)
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(f"executor must have a submit(fn, *args) method, got "
                        f"{type(executor).__name__}")
    model_kwargs = model_kwargs or {}
    info = info or inspect_model(model, observed, model_args, model_kwargs, latent_names)
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
                futures = [submit(b - a, chunk_seed(seed, first_chunk + w + j),
                                  {k: latents[k][a:b] for k in info.latent_names})
                           for j, (a, b) in enumerate(pieces[w:w + window])]
                done = _collect(done, futures, bar)
        while latents is None and len(done) < num_simulations:
            # A few chunks in flight at a time, collected in order, so the file (and the
            # result for a given seed) does not depend on the number of workers.
            # Chunks are always full: chunk k's draws then depend on (seed, k) only, and the
            # result is the first num_simulations valid draws in chunk order.
            count = min(window, -(-(num_simulations - len(done)) // chunk_size))
            futures = [submit(chunk_size, chunk_seed(seed, done.num_chunks + j), None)
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
    # Whole chunks are simulated (and saved); the caller gets its budget, not a chunk more.
    if latents is None and len(done) > num_simulations:
        done = done.head(num_simulations)
    return done
