"""The ``torch.distributed`` process group: joining it, ranks, and the collectives we use.

Launch one process per device with PyTorch's own launcher::

    torchrun --nproc_per_node 4 my_script.py

Every process runs the same script on the same full data set; ``fi.fit_density(...,
distributed=True)`` then

- joins the process group ``torchrun`` describes (``init_from_env``; ``nccl`` on GPUs,
  ``gloo`` on CPUs) unless the script already did;
- shards the training rows each epoch with ``torch.utils.data.DistributedSampler`` and splits
  the global ``batch_size`` evenly over the ranks;
- wraps the flow's negative log-likelihood in ``DistributedDataParallel``, so gradients are
  averaged across ranks after every backward pass;
- averages the training and validation losses over all ranks (early stopping and the
  learning-rate schedule see the same numbers everywhere) and writes checkpoints from rank 0
  only.

With the global batch size fixed, a run on ``N`` ranks takes the same optimisation steps as
one process on the same shuffled order: ``DistributedSampler`` hands rank ``r`` the rows
``perm[r::N]`` of one seeded permutation, so the ``N`` local batches of a step together are
exactly the single-process batch, and the averaged gradient is its gradient.

For SVI with data subsampling (``pyro.plate(..., subsample_size=...)``) use
:class:`DataParallelSVI`, a ``pyro.infer.SVI`` whose ``step`` averages the gradients of all
ranks before the optimizer step (each rank draws its own subsample).

References:
    Li et al. (2020), "PyTorch Distributed: Experiences on Accelerating Data Parallel
    Training", VLDB 13(12).
    Hoffman et al. (2013), "Stochastic Variational Inference", JMLR 14 (subsampled SVI).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "all_reduce_gradients",
    "broadcast_parameters",
    "get_rank",
    "get_world_size",
    "init_from_env",
    "is_main_process",
    "rank_device",
]

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# ------------------------------------------------------------------------------ process group
def get_rank() -> int:
    """This process's rank in the default process group (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes in the default process group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a plain single-process run): the rank that writes files."""
    return get_rank() == 0


def rank_device() -> torch.device:
    """The device this rank should use: ``cuda:LOCAL_RANK`` when CUDA is present, else CPU.

    Example:
        >>> rank_device().type in ("cpu", "cuda")
        True
    """
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_from_env(backend: str | None = None, timeout_s: float = 300.0) -> bool:
    """Join the process group described by ``torchrun``'s environment variables.

    Does nothing when the group already exists. ``backend`` defaults to ``nccl`` when CUDA
    is available and ``gloo`` otherwise; on CUDA the rank's device (``LOCAL_RANK``) becomes
    the current one.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or None (chosen as above).
        timeout_s: how long collective operations wait for the other ranks before failing.

    Returns:
        True when a process group of any size is now initialized.

    Raises:
        ValueError: ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` are missing (the
            script was not started by ``torchrun`` and no group was initialized by hand).

    Example:
        A group of one process, with the variables torchrun would set:

        >>> import os, socket
        >>> with socket.socket() as s:
        ...     _ = s.bind(("127.0.0.1", 0))
        ...     port = str(s.getsockname()[1])
        >>> env = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        >>> os.environ.update(env)
        >>> init_from_env(backend="gloo"), get_world_size(), is_main_process()
        (True, 1, True)
        >>> dist.destroy_process_group()
        >>> for key in env:
        ...     del os.environ[key]
    """
    if not dist.is_available():
        raise ValueError("torch.distributed is not available in this torch build")
    if dist.is_initialized():
        return True
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise ValueError(
            "distributed=True needs a torch.distributed process group: launch the script "
            "with `torchrun --nproc_per_node N script.py` (which sets RANK, WORLD_SIZE, "
            "MASTER_ADDR, MASTER_PORT) or call torch.distributed.init_process_group first; "
            f"missing environment variables: {', '.join(missing)}"
        )
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl", "mpi"):
        raise ValueError(f"backend must be 'gloo', 'nccl', 'mpi' or None, got {backend!r}")
    if backend == "nccl":
        torch.cuda.set_device(rank_device())
    from datetime import timedelta

    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return True


# ------------------------------------------------------------------------------ collectives
def _ordered(params: Iterable[Tensor]) -> list[Tensor]:
    params = list(params)
    if not all(isinstance(p, Tensor) for p in params):
        raise TypeError("params must be an iterable of tensors")
    return params


def broadcast_parameters(params: Iterable[Tensor], src: int = 0) -> None:
    """Overwrite ``params`` (in place) with rank ``src``'s values; a no-op in one process.

    Every rank must pass the same tensors in the same order.

    Example:
        >>> layer = torch.nn.Linear(2, 1)
        >>> before = layer.weight.detach().clone()
        >>> broadcast_parameters(layer.parameters())  # one process: unchanged
        >>> torch.equal(layer.weight, before)
        True
    """
    params = _ordered(params)
    if get_world_size() == 1 or not params:
        return
    with torch.no_grad():
        for p in params:
            # Receive into a copy, then copy_: an in-place op bumps the version counter, which
            # invalidates the bijectors' cached values (a write through .data would not).
            buf = p.detach().clone()
            dist.broadcast(buf, src=src)
            p.copy_(buf)


def all_reduce_gradients(params: Iterable[Tensor]) -> None:
    """Replace each parameter's ``.grad`` by its average over all ranks; a no-op in one process.

    Parameters without a gradient on this rank count as zero, so every rank takes part in
    the same collective whatever its subsample touched. Every rank must pass the same
    tensors in the same order. The gradients travel as one flat buffer (one collective).

    Example:
        >>> p = torch.nn.Parameter(torch.ones(2)); p.grad = torch.full((2,), 3.0)
        >>> all_reduce_gradients([p]); p.grad  # one process: unchanged
        tensor([3., 3.])
    """
    params = _ordered(params)
    world = get_world_size()
    if world == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def _all_sum(values: list[float], like: Tensor) -> list[float]:
    buf = torch.tensor(values, dtype=torch.float64, device=like.device)
    if get_world_size() > 1:
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.tolist()
