"""Checkpoints: save a flow built by ``build_flow`` and load it back, safely.

A checkpoint is one ``torch.save`` file holding a plain dictionary::

    {"format": "flowinfer-checkpoint", "format_version": 1,
     "flowinfer_version": "0.1.0", "torch_version": "2.13.0",
     "config": {"name": "nsf", "dim": 2, "context_dim": 0, "base": "standard",
                "hyper": {"num_layers": 5, "hidden": [64, 64], ...}},
     "state_dict": {...}, "extra": {...}}

Only tensors and plain Python values are stored, so :func:`load` reads it with
``torch.load(..., weights_only=True)``: opening a checkpoint never runs code from the file.
The flow is rebuilt from its registry name and hyper-parameters and then given the saved
parameters, so a checkpoint stays readable when the classes behind a flow are refactored, as
long as the same name builds the same parameter shapes.

A ``FlowPrior`` or an ``AutoFlow`` guide is stored as its flow plus an ``"object"`` entry
saying how to rebuild the wrapper; ``fit_density(checkpoint=...)`` stores its resume state
(optimizer, schedule, shuffling generator, history, best parameters) in
``extra["training"]`` (:func:`save_training_state`, :func:`restore_training_state`).

Writes are atomic: the file is written next to its destination under a temporary name,
flushed to disk and renamed over the destination, so a crash mid-write leaves the previous
checkpoint intact.

References:
    PyTorch documentation, "torch.load" (the ``weights_only`` unpickler that refuses
    anything but tensors and plain containers).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from flowinfer.flow import Flow
from flowinfer.registry import build_flow, get_flow_spec

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "save",
    "load",
    "load_checkpoint",
    "from_checkpoint",
    "save_training_state",
    "read_training_state",
    "restore_training_state",
    "check_checkpoint_paths",
]

FORMAT = "flowinfer-checkpoint"
FORMAT_VERSION = 1

PathLike = str | os.PathLike


# ------------------------------------------------------------------------------ plain values
def _to_plain(value: Any, where: str, allow_tensors: bool) -> Any:
    """Tuples become lists; anything weights_only loading would refuse raises TypeError."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):
        return [_to_plain(v, f"{where}[{i}]", allow_tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where} has a key of type {type(k).__name__}; keys must be "
                                 "strings or integers")
            out[k] = _to_plain(v, f"{where}[{k!r}]", allow_tensors)
        return out
    if allow_tensors and isinstance(value, torch.Tensor):
        return value.detach()
    kinds = "None, bool, int, float, str, lists, tuples, dicts" + (
        " and tensors" if allow_tensors else "")
    raise TypeError(
        f"{where} is a {type(value).__name__}; a checkpoint holds only {kinds} (so it can be "
        "loaded with weights_only=True)"
    )


def _from_plain(value: Any) -> Any:
    # Hyper-parameters were tuples when the flow was built (hidden=(64, 64)); lists were
    # only the storage form.
    if isinstance(value, list):
        return tuple(_from_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _from_plain(v) for k, v in value.items()}
    return value


def _check_path(path: Any, name: str = "path") -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


# ------------------------------------------------------------------------------ save
def save(flow: Any, path: PathLike, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``flow`` (built by :func:`~flowinfer.registry.build_flow`) to ``path``.

    A :class:`~flowinfer.vae.prior.FlowPrior` or an
    :class:`~flowinfer.inference.autoflow.AutoFlow` guide
    (after its first call, when its parameters exist) can be saved too: the file then holds
    their flow as usual plus what rebuilds the wrapper (``checkpoint["object"]``), and
    :func:`load` gives the same kind of object back (a guide needs ``model=``).

    Args:
        flow: the flow (or prior, or guide); its flow's ``config`` (set by ``build_flow``)
            says how to rebuild it.
        path: destination file (conventionally ``*.pt``); its folder must exist.
        extra: optional dictionary stored beside the flow, e.g. ``{"epoch": 12,
            "optimizer": optimizer.state_dict()}`` for resuming; read it back with
            :func:`load_checkpoint`. Tensors and plain Python values only.

    Returns:
        The path written.

    Raises:
        TypeError: ``flow`` is not a :class:`~flowinfer.flow.Flow`, ``path`` is not a path,
            or a hyper-parameter or ``extra`` holds something other than plain values.
        ValueError: the flow has no ``config`` (built by hand).
        FileNotFoundError: the destination folder does not exist.

    Example:
        >>> import os, tempfile, flowinfer as fi
        >>> flow = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(8,))
        >>> path = os.path.join(tempfile.mkdtemp(), "flow.pt")
        >>> _ = save(flow, path)
        >>> x = torch.randn(4, 2)
        >>> torch.allclose(load(path).log_prob(x), flow.log_prob(x))
        True
    """
    if _has_own_checkpoint(flow):
        return _save_own_checkpoint(flow, path)
    wrapper = _describe_wrapper(flow)
    if wrapper is not None:
        flow = flow.flow
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a flowinfer Flow, FlowPrior or AutoFlow guide, got "
                        f"{type(flow).__name__}")
    path = _check_path(path)
    if flow.config is None:
        raise ValueError(
            "flow has no config: only flows built with fi.build_flow(name, ...) can be saved "
            "with fi.save, because loading rebuilds them by name. For a flow assembled by "
            "hand, save its parameters with torch.save(flow.state_dict(), path) and rebuild "
            "it the same way before flow.load_state_dict(torch.load(path))"
        )
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
    config = flow.config
    for key in ("name", "dim", "context_dim", "base", "hyper"):
        if key not in config:
            raise ValueError(f"flow.config lacks {key!r}; it must come from fi.build_flow")
    checkpoint = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "flowinfer_version": _flowinfer_version(),
        "torch_version": str(torch.__version__),
        "config": _to_plain(dict(config), "flow.config", allow_tensors=False),
        "state_dict": {k: v.detach() for k, v in flow.state_dict().items()},
        "extra": _to_plain(extra or {}, "extra", allow_tensors=True),
    }
    if wrapper is not None:
        checkpoint["object"] = wrapper
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save to {path}: folder {folder} does not exist")
    _atomic_torch_save(checkpoint, path, folder)
    return path


def _flowinfer_version() -> str:
    import flowinfer

    return flowinfer.__version__


def _atomic_torch_save(obj: Any, path: Path, folder: Path) -> None:
    # Same folder as the destination: os.replace is then a rename on one file system, which
    # is atomic; a crash leaves either the old file or the new one, never half of one.
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable on POSIX; not possible (nor needed) on Windows.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------ load
def load_checkpoint(path: PathLike, map_location: Any = None) -> dict[str, Any]:
    """Read and validate a checkpoint written by :func:`save`; returns its dictionary.

    Use it to resume training (``checkpoint["extra"]``) or inspect ``checkpoint["config"]``;
    :func:`from_checkpoint` turns it into a flow. Hyper-parameters come back as stored
    (lists, not tuples).

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load`` (e.g. ``"cpu"`` for a checkpoint saved on a
            GPU).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a flowinfer checkpoint (corrupt, truncated, from another
            program, holding arbitrary objects) or is from a newer format version.

    Example:
        >>> import os, tempfile, flowinfer as fi
        >>> path = os.path.join(tempfile.mkdtemp(), "flow.pt")
        >>> _ = save(fi.build_flow("maf", dim=3, num_layers=1), path, extra={"epoch": 7})
        >>> ckpt = load_checkpoint(path)
        >>> ckpt["config"]["name"], ckpt["extra"]["epoch"]
        ('maf', 7)
    """
    path = _check_path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a checkpoint file")
    try:
        with warnings.catch_warnings():
            # Foreign pickles make torch warn about their protocol before failing anyway.
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise ValueError(
                f"{path} is not a flowinfer checkpoint: torch.load(weights_only=True) refused "
                f"it{_refused_global(str(err))}; it is not a torch file, or it holds Python "
                "objects other than tensors and plain values, which are never loaded for safety"
            ) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable checkpoint (corrupt or not a torch "
                         f"file): {first}") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError,
            IndexError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path} is not a readable checkpoint (corrupt, truncated or not a torch file): "
            f"{first}"
        ) from None
    return _validate(checkpoint, path)


def _refused_global(message: str) -> str:
    # torch's message is mostly advice on how to bypass the check; keep only what it refused.
    _, _, detail = message.partition("WeightsUnpickler error:")
    for line in detail.splitlines():
        if line.strip():
            return f" ({line.split(' was not an allowed')[0].strip()})"
    return ""


def _validate(checkpoint: Any, path: Path) -> dict[str, Any]:
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        what = (f"a dict with keys {sorted(map(str, checkpoint))[:6]}"
                if isinstance(checkpoint, dict) else f"a {type(checkpoint).__name__}")
        raise ValueError(
            f"{path} is not a flowinfer checkpoint (expected format {FORMAT!r}, found {what}); "
            "write checkpoints with fi.save(flow, path)"
        )
    version = checkpoint.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format_version {version}, newer than this flowinfer "
            f"({_flowinfer_version()}) reads (up to {FORMAT_VERSION}); it was written by "
            f"flowinfer {checkpoint.get('flowinfer_version', '?')}: upgrade flowinfer"
        )
    config = checkpoint.get("config")
    expected = {"name": str, "dim": int, "context_dim": int, "base": str, "hyper": dict}
    if not isinstance(config, dict):
        raise ValueError(f"{path}: checkpoint has no config dictionary")
    for key, kind in expected.items():
        if not isinstance(config.get(key), kind):
            raise ValueError(f"{path}: config[{key!r}] must be a {kind.__name__}, got "
                             f"{config.get(key)!r}")
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ValueError(f"{path}: checkpoint has no state_dict of tensors")
    checkpoint.setdefault("extra", {})
    return checkpoint


def from_checkpoint(checkpoint: dict[str, Any], path: PathLike = "<checkpoint>") -> Flow:
    """Rebuild the flow a validated checkpoint dictionary describes (see :func:`load`).

    Example:
        >>> import os, tempfile, flowinfer as fi
        >>> path = os.path.join(tempfile.mkdtemp(), "flow.pt")
        >>> _ = save(fi.build_flow("nsf", dim=2, num_layers=1, hidden=(8,)), path)
        >>> from_checkpoint(load_checkpoint(path)).config["hyper"]["hidden"]
        (8,)
    """
    config = checkpoint["config"]
    name = config["name"]
    try:
        get_flow_spec(name)
    except ValueError as err:
        raise ValueError(
            f"{path}: flow {name!r} is not registered in this session ({err}); import the "
            "module that registers it (fi.register_flow) before loading"
        ) from None
    hyper = _from_plain(config["hyper"])
    try:
        flow = build_flow(name, dim=config["dim"], context_dim=config["context_dim"],
                          base=config["base"], **hyper)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: cannot rebuild flow {name!r} from its config: {err}") from None
    state = checkpoint["state_dict"]
    reference = state.get("base_loc")
    if reference is not None:
        # Rebuild in the saved dtype and device: load_state_dict would otherwise cast a
        # float64 flow's parameters down to float32.
        flow.to(device=reference.device, dtype=reference.dtype)
    try:
        flow.load_state_dict(state)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise ValueError(
            f"{path}: the saved parameters do not fit flow {name!r} as built from its config "
            f"(saved by flowinfer {checkpoint.get('flowinfer_version', '?')}): {detail}"
        ) from None
    return flow.eval()


def load(
    path: PathLike,
    map_location: Any = None,
    *,
    model: Any = None,
    model_args: tuple = (),
    model_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Load a flow saved with :func:`save`; returned in eval mode.

    A saved ``FlowPrior`` comes back as a ``FlowPrior``. A saved ``AutoFlow`` guide is
    rebuilt around ``model`` (guides are tied to their model, which a file cannot hold):
    it is called once with ``model_args``/``model_kwargs`` to create its parameters, which
    then receive the saved values.

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load`` (e.g. ``"cpu"``); the flow is rebuilt on the
            device and in the dtype of the loaded parameters.
        model: the Pyro model, for a checkpoint of an ``AutoFlow`` guide only.
        model_args: positional arguments of ``model`` for the guide's first call.
        model_kwargs: keyword arguments of ``model`` for the guide's first call.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: naming ``path`` and the problem: corrupt or truncated file, a file from
            another program, a newer format version, an unregistered flow name, or parameters
            whose shapes do not match the rebuilt flow.

    Example:
        >>> import os, tempfile, flowinfer as fi
        >>> path = os.path.join(tempfile.mkdtemp(), "flow.pt")
        >>> _ = save(fi.build_flow("maf", dim=3, num_layers=2), path)
        >>> load(path).sample((5,)).shape
        torch.Size([5, 3])
    """
    checkpoint = load_checkpoint(path, map_location)
    own = checkpoint.get("object")
    if isinstance(own, dict) and own.get("type") == _OWN:
        return _load_own_checkpoint(own, path, model, model_args, model_kwargs)
    flow = from_checkpoint(checkpoint, path)
    wrapper = checkpoint.get("object")
    if wrapper is None:
        if model is not None:
            raise ValueError(f"model= was given but {path} holds a flow, not a guide")
        return flow
    return _rebuild_wrapper(wrapper, flow, path, model, model_args, model_kwargs or {})


# ------------------------------------------------------------------------------ priors, guides
def _optional_class(module: str, name: str) -> type | None:
    # priors/guides import heavy Pyro pieces; io must not depend on them being importable.
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _describe_wrapper(obj: Any) -> dict[str, Any] | None:
    """What rebuilds a FlowPrior or AutoFlow around its flow; None for anything else."""
    if isinstance(obj, Flow):
        return None
    prior_cls = _optional_class("flowinfer.vae.prior", "FlowPrior")
    if prior_cls is not None and isinstance(obj, prior_cls):
        return {"type": "FlowPrior"}
    guide_cls = _optional_class("flowinfer.guides", "AutoFlow")
    if guide_cls is not None and isinstance(obj, guide_cls):
        if not isinstance(getattr(obj, "flow", None), Flow):
            raise ValueError(
                "the AutoFlow guide has no parameters yet: call it once (or take one SVI "
                "step) before saving it"
            )
        options = obj.options
        if not isinstance(options["flow"], str):
            raise ValueError("only AutoFlow guides built with a flow name can be saved; "
                             "this one was given a flow factory")
        return {
            "type": "AutoFlow",
            "options": _to_plain({"init_scale": options["init_scale"],
                                  "scale": options["scale"]},
                                 "guide options", allow_tensors=False),
            "state_dict": {k: v.detach() for k, v in obj.state_dict().items()},
        }
    return None


def _rebuild_wrapper(wrapper: dict[str, Any], flow: Flow, path: PathLike, model: Any,
                     model_args: tuple, model_kwargs: dict[str, Any]) -> Any:
    kind = wrapper.get("type") if isinstance(wrapper, dict) else None
    if kind == "FlowPrior":
        if model is not None:
            raise ValueError(f"model= was given but {path} holds a FlowPrior, not a guide")
        prior_cls = _optional_class("flowinfer.vae.prior", "FlowPrior")
        return prior_cls(flow.dim, flow=flow).eval()
    if kind == "AutoFlow":
        if model is None or not callable(model):
            raise ValueError(
                f"{path} holds an AutoFlow guide: pass model=<the Pyro model> (and model_args "
                "for its first call) to fi.load; fi.io.from_checkpoint(fi.io.load_checkpoint"
                "(path)) gives its flow alone"
            )
        if not isinstance(model_args, tuple):
            raise TypeError(f"model_args must be a tuple, got {type(model_args).__name__}")
        import pyro.poutine as poutine

        guide_cls = _optional_class("flowinfer.guides", "AutoFlow")
        config, options = flow.config, wrapper.get("options", {})
        # warm_start=None: the saved state (Laplace buffers included) replaces any start.
        guide = guide_cls(model, flow=config["name"], init_scale=options["init_scale"],
                          scale=options["scale"], warm_start=None,
                          **_from_plain(config["hyper"]))
        with poutine.block():
            guide(*model_args, **model_kwargs)
        try:
            guide.load_state_dict(wrapper["state_dict"])
        except RuntimeError as err:
            detail = " ".join(str(err).split())
            raise ValueError(f"{path}: the saved guide does not fit this model: {detail}"
                             ) from None
        return guide
    raise ValueError(f"{path}: unknown saved object type {kind!r}; upgrade flowinfer")


# ------------------------------------------------------------------------------ resuming
_TRAINING = "fit_density"


def check_checkpoint_paths(checkpoint: Any, resume: Any) -> None:
    """Check ``fit_density``'s ``checkpoint=``/``resume=`` before any training happens."""
    if checkpoint is not None:
        path = _check_path(checkpoint, "checkpoint")
        folder = path.parent if str(path.parent) else Path(".")
        if not folder.is_dir():
            raise ValueError(f"checkpoint={str(path)!r}: folder {str(folder)!r} does not exist")
        if path.is_dir():
            raise ValueError(f"checkpoint={str(path)!r} is a folder; give a file name")
    if resume is not None:
        path = _check_path(resume, "resume")
        if not path.is_file():
            raise ValueError(f"resume={str(path)!r}: no such checkpoint file")


def save_training_state(
    path: PathLike,
    flow: Flow,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    epoch: int,
    seed: int,
    n_rows: int,
    history: dict[str, list[float]],
    best: Any,
    since_best: int,
) -> Path:
    """Checkpoint a ``fit_density`` run after ``epoch`` so it can resume (``resume=path``).

    The file is an ordinary checkpoint (:func:`load` gives the flow with the parameters of
    the last finished epoch); its ``extra["training"]`` holds the optimizer and scheduler
    states, the shuffling generator's state, the history, the best parameters so far and
    the early-stopping counter. Written atomically, like :func:`save`.
    """
    training = {
        "kind": _TRAINING,
        "epoch": int(epoch),
        "seed": int(seed),
        "n_rows": int(n_rows),
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "generator": generator.get_state(),
        "history": {k: [float(v) for v in vals] for k, vals in history.items()},
        # BestState keeps its copy privately; resuming must carry it over.
        "best_loss": float(best.loss),
        "best_step": best.step,
        "best_state": {k: v.detach() for k, v in best._state.items()},
        "since_best": int(since_best),
    }
    return save(flow, path, extra={"training": training})


def read_training_state(path: PathLike, flow: Flow) -> dict[str, Any]:
    """Read the training state of a checkpoint written by ``fit_density(checkpoint=...)``.

    Checks that the checkpoint describes the same flow (registry name, dimensions and
    hyper-parameters) as ``flow`` and loads it onto ``flow``'s device; returns the
    ``extra["training"]`` dictionary (see :func:`save_training_state`).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: unreadable file, a checkpoint without training state (written by
            :func:`save` rather than by ``fit_density``), or one of a different flow.
    """
    path = _check_path(path, "resume")
    checkpoint = load_checkpoint(path, map_location=flow.base_loc.device)
    training = checkpoint["extra"].get("training")
    if not isinstance(training, dict) or training.get("kind") != _TRAINING:
        raise ValueError(
            f"resume={str(path)!r} holds no fit_density training state (it was written by "
            "fi.save, not by fit_density(checkpoint=...)); load it with fi.load instead"
        )
    if flow.config is None:
        raise ValueError("resume needs a flow built with fi.build_flow (flow.config is None)")
    mine = _to_plain(dict(flow.config), "flow.config", allow_tensors=False)
    if mine != checkpoint["config"]:
        raise ValueError(
            f"resume={str(path)!r} was written for a different flow: checkpoint config "
            f"{checkpoint['config']}, this flow's config {mine}"
        )
    training["state_dict"] = checkpoint["state_dict"]
    return training


def restore_training_state(
    training: dict[str, Any],
    flow: Flow,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    n_rows: int,
    history: dict[str, list[float]],
    best: Any,
) -> tuple[int, int]:
    """Put a run back where :func:`save_training_state` left it.

    Returns:
        ``(first_epoch, since_best)``: the epoch to continue from and the early-stopping
        counter.

    Raises:
        ValueError: the data has a different number of training rows than the saved run, or
            the saved states do not fit the optimizer/scheduler.
    """
    if training["n_rows"] != n_rows:
        raise ValueError(
            f"resume: the checkpoint was written for {training['n_rows']} training rows, this "
            f"run has {n_rows}; resume with the same data, val_fraction and val_data"
        )
    if (training["scheduler"] is None) != (scheduler is None):
        raise ValueError("resume: the checkpoint was written with a different schedule")
    try:
        flow.load_state_dict(training["state_dict"])
        optimizer.load_state_dict(_from_plain_keep_lists(training["optimizer"]))
        if scheduler is not None:
            scheduler.load_state_dict(training["scheduler"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f"resume: the saved training state does not fit this run: {err}"
                         ) from None
    generator.set_state(training["generator"].to("cpu"))
    for key, values in training["history"].items():
        history.setdefault(key, [])[:] = values
    best.loss = training["best_loss"]
    best.step = training["best_step"]
    best._state = {k: v.clone() for k, v in training["best_state"].items()}
    return training["epoch"] + 1, training["since_best"]


def _from_plain_keep_lists(state: dict[str, Any]) -> dict[str, Any]:
    # torch's optimizers want betas as a tuple (the checkpoint stores every tuple as a list).
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
              for g in state["param_groups"]]
    return {"state": state["state"], "param_groups": groups}


# ------------------------------------------------------------------------------ to_checkpoint
# Objects that describe themselves (``obj.to_checkpoint()`` -> dict of tensors and plain
# values, ``cls.from_checkpoint(ckpt, model, ...)``), e.g. ``flowinfer.npe.NPE``. The file is
# an ordinary checkpoint of the object's ``flow`` plus ``"object"``: {"type": "to_checkpoint",
# "class": "module:QualName", "checkpoint": {...}}. Only flowinfer classes are rebuilt.
_OWN = "to_checkpoint"


def _has_own_checkpoint(obj: Any) -> bool:
    return not isinstance(obj, Flow) and callable(getattr(obj, "to_checkpoint", None))


def _save_own_checkpoint(obj: Any, path: PathLike) -> Path:
    path = _check_path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save to {path}: folder {folder} does not exist")
    flow = getattr(obj, "flow", None)
    if not isinstance(flow, Flow) or flow.config is None:
        raise TypeError(f"{type(obj).__name__}.to_checkpoint objects need a .flow built by "
                        "build_flow")
    cls = type(obj)
    checkpoint = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "flowinfer_version": _flowinfer_version(),
        "torch_version": str(torch.__version__),
        "config": _to_plain(dict(flow.config), "flow.config", allow_tensors=False),
        "state_dict": {k: v.detach() for k, v in flow.state_dict().items()},
        "extra": {},
        "object": {"type": _OWN, "class": f"{cls.__module__}:{cls.__qualname__}",
                   "checkpoint": _to_plain(obj.to_checkpoint(), "to_checkpoint()",
                                           allow_tensors=True)},
    }
    _atomic_torch_save(checkpoint, path, folder)
    return path


def _load_own_checkpoint(own: dict[str, Any], path: PathLike, model: Any, model_args: tuple,
                         model_kwargs: dict[str, Any] | None) -> Any:
    import importlib

    module, _, name = str(own.get("class", "")).partition(":")
    if not module.startswith("flowinfer."):
        raise ValueError(f"{path}: saved object class {own.get('class')!r} is not a flowinfer "
                         "class; refusing to import it")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ValueError(f"{path}: saved object class {own.get('class')!r} is not available "
                         "in this flowinfer; upgrade flowinfer") from None
    if model is None:
        raise ValueError(f"{path} holds a {name}: pass model=<the Pyro model> to fi.load")
    return cls.from_checkpoint(own["checkpoint"], model, model_args=model_args,
                               model_kwargs=model_kwargs)
