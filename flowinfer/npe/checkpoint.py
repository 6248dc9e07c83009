"""What ``fi.save`` stores of a trained NPE besides its flow, and how ``fi.load`` rebuilds it.

The record holds tensors and plain values only (the embedding's and standardisers' states,
the site names, the named embedding's options); the model comes back as an argument.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from flowinfer.npe.bounded import SupportLocation, bounded_sites
from flowinfer.npe.mixture import CandidateEmbedding, MixtureFlow
from flowinfer.npe.options import plain, tuples
from flowinfer.npe.regressed import DataBeside, RegressedFlow
from flowinfer.npe.standardize import PairScaling, RegressionStandardizer, Standardizer

__all__ = ["npe_record", "rebuild_npe", "saved_flow"]


def saved_flow(npe: Any) -> nn.Module:
    """The flow ``fi.save`` stores as such: a mixture's first member's, a regressed
    member's inner flow (the record holds the rest)."""
    return _inner(getattr(npe.flow, "flows", [npe.flow])[0])


def npe_record(npe: Any) -> dict[str, Any]:
    """The record of a trained NPE (everything but its flow and its model)."""
    return {
        "type": "NPE",
        "observed": list(npe.observed),
        "latent_names": list(npe.info.latent_names),
        "nuisance_names": list(npe.info.nuisance_names),
        "embedding": npe.embedding_kind,
        "embedding_options": plain(npe.embedding_options),
        "embedding_state": _state(_inner(npe.embedding)),
        "theta_standardizer": _state(npe.scaling.theta),
        "x_standardizer": _state(npe.scaling.x),
        "standardize": npe.standardize,
        "data_space": npe.data_space,
        "latent_regression": {**_state(npe.scaling.latent),
                              "pool": list(npe.scaling.latent.pool)},
        "constant_data": npe.constant_data,
        "num_simulations": 0 if npe.simulations is None else len(npe.simulations),
        **({"mixture": _mixture_record(npe)} if isinstance(npe.flow, MixtureFlow) else {}),
        **({"regressed": _head_record(npe.flow)} if isinstance(npe.flow, RegressedFlow)
           else {}),
    }


def _inner(module: nn.Module) -> nn.Module:
    """A regressed member's own embedding or flow (what is saved and rebuilt by name)."""
    return module.inner if isinstance(module, DataBeside | RegressedFlow) else module


def _head_record(flow: RegressedFlow) -> dict[str, Any]:
    return {"head": _state(flow.head), "num_features": flow.num_features,
            "located": flow.located,
            **({"location": _state(flow.location)} if flow.location is not None else {})}


def _regressed(npe: Any, net: nn.Module, flow: nn.Module, head: dict[str, Any] | None
               ) -> tuple[nn.Module, nn.Module]:
    """``net`` and ``flow`` wrapped again as the saved regressed member (as they are when
    ``head`` is None)."""
    if head is None:
        return net, flow
    from flowinfer.npe.selection import regressed_member

    # Records before the inner flow read the location features have no "located".
    net, flow = regressed_member(net, flow, npe.data_shape, head.get("located", 0))
    flow.head = RegressionStandardizer(**head["head"], pool=())
    flow.head_fitted = True
    if flow.num_features != head["num_features"]:
        raise ValueError(f"the saved regressed member reads {head['num_features']} data "
                         f"features, this model's data give {flow.num_features}")
    if "location" in head:  # records before the location features have none
        sites = bounded_sites(npe.info)
        saved, here = head["location"]["low"].numel(), sum(site.size for site in sites)
        if saved != here:
            raise ValueError(f"the saved regressed member predicts {saved} bounded latent "
                             f"coordinates, this model's bounded sites "
                             f"{[site.name for site in sites]} have {here}")
        flow.location = SupportLocation.from_state(sites, head["location"])
    if flow.located and flow.location is None:
        raise ValueError(f"the saved regressed member reads {flow.located} location "
                         "features but its record holds no location")
    return net, flow


def _state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach() for k, v in module.state_dict().items()}


def _mixture_record(npe: Any) -> dict[str, Any]:
    flows, embeddings = npe.flow.flows, npe.embedding.embeddings
    return {"log_weights": npe.flow.log_weights.detach(), "sizes": list(npe.flow.sizes),
            "components": [{"kind": kind, "options": plain(options),
                            "embedding_state": _state(_inner(e)),
                            "flow_config": plain(_inner(f).config),
                            "flow_state": _state(_inner(f)),
                            **({"regressed": _head_record(f)}
                               if isinstance(f, RegressedFlow) else {})}
                           for (kind, options), e, f in zip(
                               npe.embedding_options["components"], embeddings, flows,
                               strict=True)]}


def _rebuild_mixture(npe: Any, first_flow: nn.Module, mixture: dict[str, Any]) -> None:
    from flowinfer.io import from_checkpoint
    from flowinfer.npe.embeddings import make_embedding
    from flowinfer.npe.selection import Candidate

    embeddings, flows = [], []
    for k, part in enumerate(mixture["components"]):
        net, _, _ = make_embedding(part["kind"], tuples(part["options"]), npe.data_shape)
        net.load_state_dict(part["embedding_state"])
        flow = first_flow if k == 0 else from_checkpoint(
            {"config": part["flow_config"], "state_dict": part["flow_state"]})
        net, flow = _regressed(npe, net, flow, part.get("regressed"))
        embeddings.append(net)
        flows.append(flow)
    log_weights = mixture["log_weights"]
    options = {"weights": [float(w) for w in log_weights.exp()],
               "components": [(p["kind"], tuples(p["options"]))
                              for p in mixture["components"]]}
    mixed = MixtureFlow(flows, mixture["sizes"], log_weights.exp())
    mixed.log_weights.copy_(log_weights)  # exactly the saved ones, not re-rounded
    chosen = Candidate(CandidateEmbedding(embeddings, mixture["sizes"]), "mixture", options,
                       mixed)
    npe._use(chosen)
    npe._candidates = [chosen]
    # A later sequential fit restarts each round from untrained members like the saved ones
    # (NPE._restart), not from the one candidate the constructor above built.
    parts = mixture["components"]
    # A member's copy number: how many earlier members share its specification.
    npe._untrained = [_untrained_like(npe, part, sum(
        (p["kind"], p["options"]) == (part["kind"], part["options"]) for p in parts[:k]))
        for k, part in enumerate(parts)]


def _untrained_like(npe: Any, part: dict[str, Any], replicate: int) -> Any:
    from flowinfer.npe.selection import embedding_candidates
    from flowinfer.registry import build_flow

    config = part["flow_config"]
    located = part["regressed"].get("located", 0) if "regressed" in part else 0
    candidate, = embedding_candidates(
        part["kind"], tuples(part["options"]), npe.data_shape,
        lambda k: build_flow(config["name"], dim=npe.info.latent_dim,
                             context_dim=k + located, **tuples(config["hyper"])))
    candidate.replicate = replicate
    if "regressed" in part:
        from flowinfer.npe.selection import regressed_member

        candidate.embedding, candidate.flow = regressed_member(
            candidate.embedding, candidate.flow, npe.data_shape, located)
    return candidate


def rebuild_npe(cls: type, flow: nn.Module, record: dict[str, Any], *,
                model: Callable | None, model_args: tuple = (),
                model_kwargs: dict | None = None, path: Any = "<checkpoint>",
                embedding: nn.Module | None = None) -> Any:
    """A trained ``cls`` (NPE) around ``model``, the loaded ``flow`` and the saved record."""
    if not isinstance(record, dict) or record.get("type") != "NPE":
        raise ValueError(f"{path}: not an NPE record")
    if model is None:
        raise ValueError(f"{path} holds an NPE: pass model=<the Pyro model> to fi.load")
    if record["embedding"] is None and embedding is None:
        raise ValueError(f"{path}: this NPE was trained with a custom embedding module; "
                         "rebuild it with NPE.from_checkpoint(..., embedding=<a module of "
                         "the same class>)")
    config = flow.config
    mixture = record.get("mixture")
    part = mixture["components"][0] if mixture else {"kind": record["embedding"],
                                                     "options": record["embedding_options"]}
    # Older records have no nuisance sites: every free site was a latent.
    latents = record["latent_names"] if "nuisance_names" in record else None
    try:
        npe = cls(model, record["observed"], latents=latents, model_args=model_args,
                  model_kwargs=model_kwargs, flow=config["name"],
                  flow_options=tuples(config["hyper"]),
                  embedding=embedding if embedding is not None else part["kind"],
                  embedding_options=None if embedding is not None
                  else tuples(part["options"]), combine="mixture" if mixture else "best",
                  replicates=1, constant_data=record.get("constant_data", "error"),
                  # Records before the regression standardiser z-scored by the prior only;
                  # "mixed" members are rebuilt below (one copy here would refuse it).
                  standardize=record.get("standardize", "prior").replace("mixed", "prior"),
                  # Records before data_space read every site as simulated.
                  data_space=record.get("data_space", "raw"))
    except ValueError as err:
        raise ValueError(f"{path}: the saved NPE (latent sites {record['latent_names']}, "
                         f"observed {record['observed']}) does not fit this model: {err}"
                         ) from None
    nuisance = list(record.get("nuisance_names", []))
    if nuisance != npe.info.nuisance_names:
        raise ValueError(f"{path}: the saved NPE marginalised the nuisance sites {nuisance}, "
                         f"this model has {npe.info.nuisance_names}")
    if list(record["latent_names"]) != npe.info.latent_names:
        raise ValueError(f"{path}: the saved NPE's latent sites {record['latent_names']} "
                         f"are not this model's {npe.info.latent_names}")
    # A combine="best" regressed winner's inner flow also reads the location features.
    located = record.get("regressed", {}).get("located", 0)
    if flow.dim != npe.flow.dim or flow.context_dim != npe.flow.context_dim + located:
        raise ValueError(f"{path}: the saved flow (dim {flow.dim}, context "
                         f"{flow.context_dim}) does not fit this model (dim "
                         f"{npe.flow.dim}, context {npe.flow.context_dim + located})")
    try:
        if mixture:
            _rebuild_mixture(npe, flow, mixture)
        else:
            npe.embedding.load_state_dict(record["embedding_state"])
            npe.embedding, npe.flow = _regressed(npe, npe.embedding, flow,
                                                 record.get("regressed"))
            from flowinfer.npe.selection import Candidate

            npe._candidates = [Candidate(npe.embedding, npe.embedding_kind,
                                         npe.embedding_options, npe.flow)]
            if "regressed" in record:  # later sequential rounds restart a regressed member
                npe._untrained = [_untrained_like(npe, {
                    "kind": record["embedding"], "options": record["embedding_options"],
                    "flow_config": plain(flow.config),
                    "regressed": {"located": located}}, 1)]
    except RuntimeError as err:
        raise ValueError(f"{path}: the saved embedding does not fit: "
                         f"{' '.join(str(err).split())}") from None
    ts, xs = record["theta_standardizer"], record["x_standardizer"]
    head = record.get("latent_regression")
    npe.scaling = PairScaling(
        Standardizer(ts["mean"], ts["std"]), Standardizer(xs["mean"], xs["std"]),
        RegressionStandardizer.identity(npe.info.latent_dim) if head is None
        else RegressionStandardizer(**head))
    npe.standardize = record.get("standardize", "prior")
    npe.flow.eval()
    npe.embedding.eval()
    return npe
