"""Saving and rebuilding an ``AutoFlow`` guide (the checkpoint protocol of ``flowinfer.io``)."""

from __future__ import annotations

from typing import Any

from pyro import poutine

from flowinfer.flow import Flow
from flowinfer.io import from_plain

__all__ = ["GuideCheckpoint"]


class GuideCheckpoint:
    """``to_checkpoint`` / ``from_checkpoint`` for ``AutoFlow`` (mixed into the guide)."""

    def to_checkpoint(self) -> dict[str, Any]:
        """Its flow and what rebuilds the guide around it (used by ``fi.save``)."""
        if not isinstance(getattr(self, "flow", None), Flow):
            raise ValueError(
                "the AutoFlow guide has no parameters yet: call it once (or take one SVI "
                "step) before saving it"
            )
        if not isinstance(self._flow_arg, str):
            raise ValueError("only AutoFlow guides built with a flow name can be saved; "
                             "this one was given a flow factory")
        return {"flow": self.flow, "object": {
            "type": "AutoFlow",
            "options": {"init_scale": float(self._init_scale), "scale": self._scale_kind},
            "state_dict": {k: v.detach() for k, v in self.state_dict().items()},
        }}

    @classmethod
    def from_checkpoint(cls, flow: Flow, record: dict[str, Any], *, model: Any = None,
                        model_args: tuple = (), model_kwargs: dict | None = None,
                        path: Any = "<checkpoint>") -> Any:
        """Rebuild a saved guide around ``model`` (used by ``fi.load``).

        The guide is called once with ``model_args``/``model_kwargs`` to create its
        parameters, which then receive the saved values; no warm start runs.
        """
        if model is None or not callable(model):
            raise ValueError(
                f"{path} holds an AutoFlow guide: pass model=<the Pyro model> (and model_args "
                "for its first call) to fi.load; fi.io.from_checkpoint(fi.io.load_checkpoint"
                "(path)) gives its flow alone"
            )
        config, options = flow.config, record.get("options", {})
        hyper = from_plain(config["hyper"])
        # warm_start=None: the saved state (Laplace buffers included) replaces any start.
        guide = cls(model, flow=config["name"], init_scale=options["init_scale"],
                    scale=options["scale"], warm_start=None, **hyper)
        with poutine.block():
            guide(*model_args, **(model_kwargs or {}))
        try:
            guide.load_state_dict(record["state_dict"])
        except RuntimeError as err:
            detail = " ".join(str(err).split())
            raise ValueError(f"{path}: the saved guide does not fit this model: {detail}"
                             ) from None
        return guide
