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

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from flowinfer._version import __version__
from flowinfer.flow import Flow
from flowinfer.io.files import atomic_torch_save, check_path, from_plain, to_plain
from flowinfer.registry import build_flow, get_flow_spec

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "save",
    "load",
    "load_checkpoint",
    "from_checkpoint",
]

FORMAT = "flowinfer-checkpoint"
FORMAT_VERSION = 1

PathLike = str | os.PathLike


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
    flow, wrapper = _describe_wrapper(flow)
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a flowinfer Flow, FlowPrior or AutoFlow guide, got "
                        f"{type(flow).__name__}")
    path = check_path(path)
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
        "config": to_plain(dict(config), "flow.config", allow_tensors=False),
        "state_dict": {k: v.detach() for k, v in flow.state_dict().items()},
        "extra": to_plain(extra or {}, "extra", allow_tensors=True),
    }
    if wrapper is not None:
        checkpoint["object"] = wrapper
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save to {path}: folder {folder} does not exist")
    atomic_torch_save(checkpoint, path, folder)
    return path


def _flowinfer_version() -> str:
    return __version__


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
    path = check_path(path)
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
    hyper = from_plain(config["hyper"])
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
    flow = from_checkpoint(checkpoint, path)
    wrapper = checkpoint.get("object")
    if wrapper is None:
        if model is not None:
            raise ValueError(f"model= was given but {path} holds a flow, not a guide")
        return flow
    return _rebuild_wrapper(wrapper, flow, path, model, model_args, model_kwargs or {})


# ------------------------------------------------------------------------------ saveable objects
# Objects built around a flow (a prior, a guide, an estimator) describe and rebuild themselves:
#   obj.to_checkpoint() -> {"flow": Flow, "object": {"type": str, ...plain values/tensors}}
#   cls.from_checkpoint(flow, record, *, model, model_args, model_kwargs, path) -> obj
# io records the class's import path beside the record and imports it back on load, so io
# itself names no class of a higher layer. Files of flowinfer 0.1 name only the type.
_LEGACY_CLASSES = {"FlowPrior": "flowinfer.vae.prior:FlowPrior",
                   "AutoFlow": "flowinfer.inference.autoflow:AutoFlow"}


def _describe_wrapper(obj: Any) -> tuple[Flow, dict[str, Any] | None]:
    """The flow to store and, for an object built around one, what rebuilds it."""
    if isinstance(obj, Flow) or not callable(getattr(obj, "to_checkpoint", None)):
        return obj, None
    described = obj.to_checkpoint()
    record = dict(described["object"])
    record["class"] = f"{type(obj).__module__}:{type(obj).__qualname__}"
    return described["flow"], record


def _saved_class(record: dict[str, Any], path: PathLike) -> type:
    import importlib

    where = record.get("class") or _LEGACY_CLASSES.get(record.get("type"))
    if not isinstance(where, str) or not where.startswith("flowinfer.") or ":" not in where:
        raise ValueError(f"{path}: unknown saved object type {record.get('type')!r}; "
                         "upgrade flowinfer")
    module, name = where.split(":", 1)
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise ValueError(f"{path}: the saved object's class {where} is not in this flowinfer "
                         "version; upgrade flowinfer") from None
    if not callable(getattr(cls, "from_checkpoint", None)):
        raise ValueError(f"{path}: {where} cannot be rebuilt from a checkpoint")
    return cls


def _rebuild_wrapper(record: dict[str, Any], flow: Flow, path: PathLike, model: Any,
                     model_args: tuple, model_kwargs: dict[str, Any]) -> Any:
    if not isinstance(record, dict):
        raise ValueError(f"{path}: the saved object record is not a dictionary")
    if not isinstance(model_args, tuple):
        raise TypeError(f"model_args must be a tuple, got {type(model_args).__name__}")
    return _saved_class(record, path).from_checkpoint(
        flow, record, model=model, model_args=model_args, model_kwargs=model_kwargs, path=path)
