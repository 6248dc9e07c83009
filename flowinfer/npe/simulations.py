"""The container of simulated (latents, data) pairs, and its file for long campaigns.

Example:
    >>> import torch
    >>> sims = Simulations({"theta": torch.zeros(3, 2)}, {"x": torch.ones(3)})
    >>> len(sims), len(sims.extend(sims))
    (3, 6)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from flowinfer.npe.sites import ModelInfo

__all__ = ["Simulations"]

_FILE_FORMAT = "flowinfer-npe-simulations"


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
