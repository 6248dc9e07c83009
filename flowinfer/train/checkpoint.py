"""Checkpoints of a running fit: write the loop's state after each epoch, resume from it.

The file is an ordinary flowinfer checkpoint of the trained flow (``fi.load`` gives the flow
with the parameters of the last finished epoch); its ``extra["training"]`` holds the loop's
state: optimizer and scheduler states, the shuffling generator's state, the history, the best
parameters so far (:meth:`BestState.state_dict`) and the early-stopping counter. Files
written by flowinfer 0.1's ``fit_density`` (kind ``"fit_density"``) resume unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowinfer import io
from flowinfer.flow import Flow
from flowinfer.train.state import BestState

__all__ = ["check_checkpoint_paths", "save_training_state", "read_training_state",
           "restore_training_state"]

_KIND = "fit"
_READABLE_KINDS = (_KIND, "fit_density")


def _only_flow(modules: Sequence[nn.Module], what: str) -> Flow:
    if len(modules) != 1 or not isinstance(modules[0], Flow):
        raise ValueError(f"{what} needs exactly one trained module, a Flow built with "
                         f"fi.build_flow; got {[type(m).__name__ for m in modules]}")
    return modules[0]


def check_checkpoint_paths(checkpoint: Any, resume: Any) -> None:
    """Check ``checkpoint=`` / ``resume=`` before any training happens."""
    if checkpoint is not None:
        path = io.check_path(checkpoint, "checkpoint")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise ValueError(f"checkpoint={str(path)!r}: folder {str(folder)!r} does not exist")
        if path.is_dir():
            raise ValueError(f"checkpoint={str(path)!r} is a folder; give a file name")
    if resume is not None:
        path = io.check_path(resume, "resume")
        if not path.is_file():
            raise ValueError(f"resume={str(path)!r}: no such checkpoint file")


def save_training_state(
    path: str | os.PathLike, modules: Sequence[nn.Module], *, optimizer: torch.optim.Optimizer,
    scheduler: Any, generator: torch.Generator, epoch: int, seed: int, n_rows: int,
    history: dict[str, list[float]], best: BestState, since_best: int,
) -> Path:
    """Checkpoint a run after ``epoch`` so that it can resume (``resume=path``); atomic."""
    flow = _only_flow(modules, "checkpoint=")
    training = {
        "kind": _KIND,
        "epoch": int(epoch),
        "seed": int(seed),
        "n_rows": int(n_rows),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "generator": generator.get_state(),
        "history": {k: [float(v) for v in vals] for k, vals in history.items()},
        **best.state_dict(),
        "since_best": int(since_best),
    }
    return io.save(flow, path, extra={"training": training})


def read_training_state(path: str | os.PathLike,
                        modules: Sequence[nn.Module] | Flow) -> dict[str, Any]:
    """The ``extra["training"]`` of a checkpoint written during a fit, for the same flow.

    Raises:
        ValueError: unreadable file, a checkpoint without training state (written by
            ``fi.save``), or one of a different flow (name, dimensions, hyper-parameters).
    """
    flow = _only_flow([modules] if isinstance(modules, nn.Module) else modules, "resume=")
    path = io.check_path(path, "resume")
    checkpoint = io.load_checkpoint(path, map_location=flow.base_loc.device)
    training = checkpoint["extra"].get("training")
    if not isinstance(training, dict) or training.get("kind") not in _READABLE_KINDS:
        raise ValueError(
            f"resume={str(path)!r} holds no training state (it was written by fi.save, not "
            "by fit_density(checkpoint=...)); load it with fi.load instead"
        )
    if flow.config is None:
        raise ValueError("resume needs a flow built with fi.build_flow (flow.config is None)")
    mine = io.to_plain(dict(flow.config), "flow.config", allow_tensors=False)
    if mine != checkpoint["config"]:
        raise ValueError(
            f"resume={str(path)!r} was written for a different flow: checkpoint config "
            f"{checkpoint['config']}, this flow's config {mine}"
        )
    training["state_dict"] = checkpoint["state_dict"]
    return training


def restore_training_state(
    training: dict[str, Any], modules: Sequence[nn.Module] | Flow, *,
    optimizer: torch.optim.Optimizer, scheduler: Any, generator: torch.Generator, n_rows: int,
    history: dict[str, list[float]], best: BestState,
) -> tuple[int, int]:
    """Put a run back where :func:`save_training_state` left it.

    Returns:
        ``(first_epoch, since_best)``: the epoch to continue from and the early-stopping
        counter.

    Raises:
        ValueError: the data has a different number of training rows than the saved run, or
            the saved states do not fit the optimizer/scheduler.
    """
    flow = _only_flow([modules] if isinstance(modules, nn.Module) else modules, "resume=")
    if training["n_rows"] != n_rows:
        raise ValueError(
            f"resume: the checkpoint was written for {training['n_rows']} training rows, this "
            f"run has {n_rows}; resume with the same data, val_fraction and val_data"
        )
    if (training["scheduler"] is None) != (scheduler is None):
        raise ValueError("resume: the checkpoint was written with a different schedule")
    try:
        flow.load_state_dict(training["state_dict"])
        optimizer.load_state_dict(_optimizer_state(training["optimizer"]))
        if scheduler is not None:
            scheduler.load_state_dict(training["scheduler"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f"resume: the saved training state does not fit this run: {err}"
                         ) from None
    generator.set_state(training["generator"].to("cpu"))
    for key, values in training["history"].items():
        history.setdefault(key, [])[:] = values
    best.load_state_dict(training)
    return training["epoch"] + 1, training["since_best"]


def _optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    # torch's optimizers want betas as a tuple (the checkpoint stores every tuple as a list).
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
              for g in state["param_groups"]]
    return {"state": state["state"], "param_groups": groups}
