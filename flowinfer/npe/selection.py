"""``embedding="auto"``: train candidate embeddings on one split, keep the best by validation
(``combine="best"``) or all of them as a mixture (``combine="mixture"``, the default).

The held-out negative log density of ``q(theta | x)`` estimates the expected KL divergence
from the true posterior to ``q`` up to a constant shared by every candidate, so the
candidate with the lower validation loss is, on average over the prior predictive, the
closer posterior. The candidates are an MLP embedding that passes the data on beside its
features and one that does not: the first wins where posterior locations are near-linear in
the data, the second where only nonlinear summaries carry information (measured in
``benchmarks/npe_heldout.py``; docs/npe.md "Defaults"). Both train on the same split and
batches (the same seed), so the choice costs one more training run and no simulations.
Mixing them (:mod:`flowinfer.npe.mixture`) was better still on every model measured.

Each candidate is trained ``replicates`` times from fresh initialisations (2 for ``"auto"``
by default, so the mixture has four members): at small budgets two runs that differ only in
their initial weights differ by 0.1-0.3 nats of held-out density, and a mixture of both
removes much of that spread (docs/npe.md "Defaults").

Example:
    >>> [(kind, options) for kind, options in AUTO_CANDIDATES]
    [('mlp', {'skip': True}), ('mlp', {'skip': False})]
    >>> default_replicates("auto"), default_replicates("mlp")
    (2, 1)

References:
    Papamakarios & Murray (2016), "Fast epsilon-free inference of simulation models with
    Bayesian conditional density estimation", NeurIPS (the loss as an expected KL).
    Lakshminarayanan, Pritzel & Blundell (2017), "Simple and scalable predictive uncertainty
    estimation using deep ensembles", NeurIPS (members that differ by initialisation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowinfer.checks import check_choice, check_int
from flowinfer.npe.embeddings import check_embedding, embedding_pool, make_embedding
from flowinfer.npe.mixture import CandidateEmbedding, MixtureFlow, mixture_weights
from flowinfer.npe.regressed import DataBeside, RegressedFlow, num_regression_features

__all__ = ["AUTO_CANDIDATES", "Candidate", "default_replicates", "embedding_candidates",
           "regressed_member", "select_embedding"]

#: ``embedding="auto"``: (name, options) of the candidates, in the order they are trained.
AUTO_CANDIDATES = (("mlp", {"skip": True}), ("mlp", {"skip": False}))


class Candidate:
    """One embedding with the flow built for its output size (``replicate``: which of the
    independently initialised copies of the same specification it is)."""

    def __init__(self, embedding: nn.Module, kind: str | None, options: dict,
                 flow: nn.Module, replicate: int = 0) -> None:
        self.embedding, self.kind, self.options, self.flow = embedding, kind, options, flow
        self.replicate = replicate

    @property
    def label(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.options.items())
        copy = f"#{self.replicate + 1}" if self.replicate else ""
        if isinstance(self.flow, RegressedFlow):
            copy += " regressed"
        return f"{self.kind or type(self.embedding).__name__}({options}){copy}"


def default_replicates(embedding: Any) -> int:
    """How many independently initialised copies of each candidate ``embedding`` trains by
    default: 2 for ``"auto"`` (whose copies become one mixture), 1 otherwise."""
    return 2 if isinstance(embedding, str) and embedding == "auto" else 1


def member_settings(embedding: Any, replicates: int | None, standardize: str
                    ) -> tuple[int, str]:
    """``replicates`` and ``standardize`` checked, their defaults resolved: ``None`` copies
    is :func:`default_replicates`, and ``"auto"`` is ``"mixed"`` (regressed members beside
    plain ones) when each candidate has at least two copies, else ``"prior"``.

    Example:
        >>> member_settings("auto", None, "auto"), member_settings("mlp", None, "auto")
        ((2, 'mixed'), (1, 'prior'))
    """
    replicates = check_int(default_replicates(embedding) if replicates is None else replicates,
                           "replicates")
    check_choice(standardize, "standardize", ("auto", "prior", "regression", "mixed"))
    if standardize == "auto":
        standardize = "mixed" if replicates >= 2 else "prior"
    return replicates, standardize


def embedding_candidates(embedding: Any, options: dict | None, data_shape: Sequence[int],
                         build_flow: Callable[[int], nn.Module],
                         replicates: int = 1, regressed: bool = False,
                         located: int = 0) -> list[Candidate]:
    """The candidates for ``embedding`` (one specification unless ``"auto"``), each built
    ``replicates`` times from fresh initial weights and checked on dummy data.

    ``"auto"`` takes ``options`` as MLP options for every candidate; ``skip`` among them
    fixes that choice, leaving one candidate. With ``regressed`` the odd copies are
    regressed members (:mod:`flowinfer.npe.regressed`) whose inner flows read ``located``
    location features (the bounded latent coordinates, :mod:`flowinfer.npe.bounded`)
    beside the embedding.

    Raises:
        TypeError / ValueError: what building or checking the embedding raises; ``replicates``
            above 1 with an ``nn.Module`` (one instance cannot be re-initialised).
    """
    if regressed and replicates < 2:
        raise ValueError(f'standardize="mixed" regresses every second copy of each '
                         f"candidate, so it needs replicates >= 2, got {replicates} "
                         "(pass replicates=2)")
    if isinstance(embedding, nn.Module) and replicates > 1:
        raise ValueError(f"replicates={replicates} needs a named embedding (each copy starts "
                         "from fresh weights); with an nn.Module instance pass replicates=1")
    if isinstance(embedding, str) and embedding == "auto":
        # The candidates are MLPs: the user's MLP options hold for both, and a given
        # ``skip`` leaves one candidate.
        options = dict(options or {})
        specs = [(kind, {**opts, **options}) for kind, opts in AUTO_CANDIDATES
                 if "skip" not in options or opts["skip"] == options["skip"]]
    else:
        specs = [(embedding, options)]
    out = []
    for copy in range(replicates):
        for kind, opts in specs:
            net, name, opts = make_embedding(kind, opts, data_shape)
            size = check_embedding(net, data_shape)
            if regressed and copy % 2 == 1:
                net, flow = regressed_member(net, build_flow(size + located), data_shape,
                                             located)
            else:
                flow = build_flow(size)
            out.append(Candidate(net, name, opts, flow, replicate=copy))
    return out


def regressed_member(net: nn.Module, flow: nn.Module, data_shape: Sequence[int],
                     located: int = 0) -> tuple[DataBeside, RegressedFlow]:
    """``net`` and ``flow`` wrapped as a regressed member, its features pooled over the
    trial axes ``net`` pools over (those that exist in ``data_shape``); ``flow``'s context
    is ``net``'s output and then ``located`` location features."""
    pool = embedding_pool(net, data_shape)
    return (DataBeside(net, pool),
            RegressedFlow(flow, num_regression_features(data_shape, pool), located=located))


def select_embedding(npe: Any, train_one: Callable[[], Any],
                     validation: Callable[[], tuple[Tensor, Tensor]] | None = None) -> Any:
    """Train each of ``npe``'s candidates with ``train_one`` and keep the best (or, with
    ``npe.combine == "mixture"``, all of them as a mixture weighted on ``validation()``,
    the standardised validation pairs ``(z, x)``).

    Sets ``npe.embedding``, ``npe.flow`` and their description to the winner's (or the
    mixture's), records ``npe.selection = {"candidates", "val_loss", "chosen", "results"}``
    (every candidate's ``FitResult``; ``"weights"`` for a mixture), keeps only the winner's
    run in ``npe.results`` and returns it.
    """
    before, results = len(npe.results), []
    for candidate in npe._candidates:
        npe._use(candidate)
        results.append(train_one())
    # A run that never reached a finite validation loss cannot win.
    losses = [float(r.best_loss) if math.isfinite(r.best_loss) else math.inf for r in results]
    best = min(range(len(losses)), key=losses.__getitem__)
    npe.selection = {"candidates": [c.label for c in npe._candidates], "val_loss": losses,
                     "chosen": npe._candidates[best].label, "results": results}
    if getattr(npe, "combine", "best") == "mixture" and validation is not None:
        chosen = _mixture(npe._candidates, validation())
        npe.selection.update(chosen="mixture", weights=chosen.options["weights"])
    else:
        chosen = npe._candidates[best]
    npe._use(chosen)
    npe._candidates = [chosen]
    # npe.results holds the chosen estimator's runs, one per round.
    del npe.results[before:]
    npe.results.append(results[best])
    return results[best]


@torch.no_grad()
def _mixture(candidates: list[Candidate], validation: tuple[Tensor, Tensor]) -> Candidate:
    z, x = validation
    sizes, log_q = [], []
    for c in candidates:
        c.flow.eval()
        c.embedding.eval()
        context = c.embedding(x)
        sizes.append(context.shape[-1])
        log_q.append(c.flow.log_prob(z, context))
    weights = mixture_weights(torch.stack(log_q))
    embedding = CandidateEmbedding([c.embedding for c in candidates], sizes)
    flow = MixtureFlow([c.flow for c in candidates], sizes, weights)
    return Candidate(embedding, "mixture", {"weights": [float(w) for w in weights],
                                            "components": [(c.kind, c.options)
                                                           for c in candidates]}, flow)
