"""``NPE``: an amortized posterior ``q(theta | x)`` of a Pyro model, learned from simulations.

The model is used as it is: a plain run draws the latents from the prior and the observed
sites from the simulator. NPE simulates pairs, maps each latent site to unconstrained space
(``biject_to`` of its support), z-scores both sides, and trains a conditional flow
``q(z | embedding(x))`` by maximum likelihood (:class:`~flowinfer.npe.loss.NPELoss` in the
generic loop :func:`flowinfer.train.fit`). Draws are mapped back through the bijections, so
they never leave a bounded prior; densities include every Jacobian.

Example:
    >>> import torch, pyro, pyro.distributions as dist, flowinfer as fi
    >>> def model():
    ...     theta = pyro.sample("theta", dist.Uniform(-1.0, 1.0))
    ...     pyro.sample("x", dist.Normal(theta, 0.1))
    >>> npe = fi.NPE(model, observed="x", flow_options={"num_layers": 1, "hidden": (16,)})
    >>> _ = npe.fit(num_simulations=300, seed=0, epochs=3, progress=False)
    >>> draws = npe.sample(1000, x=torch.tensor(0.95))
    >>> draws["theta"].shape, bool(draws["theta"].abs().max() <= 1.0)
    (torch.Size([1000]), True)

References:
    Papamakarios & Murray (2016), "Fast epsilon-free inference of simulation models with
    Bayesian conditional density estimation", NeurIPS. Greenberg, Nonnenmacher, Macke
    (2019), "Automatic posterior transformation for likelihood-free inference", ICML.
    Deistler et al. (2022), "Truncated proposals for scalable and hassle-free
    simulation-based inference", NeurIPS.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from flowinfer.checks import check_choice, check_int
from flowinfer.npe.bounded import bounded_sites
from flowinfer.npe.checkpoint import npe_record, rebuild_npe, saved_flow
from flowinfer.npe.chunks import make_spec
from flowinfer.npe.data_space import DATA_SPACES, pack_data
from flowinfer.npe.embeddings import embedding_pool
from flowinfer.npe.options import (
    DEFAULT_FLOW,
    DEFAULT_TRAINING,
    given_simulations,
    posterior_flow_options,
    round_budgets,
    sequential_options,
    training_options,
)
from flowinfer.npe.selection import Candidate, embedding_candidates, member_settings
from flowinfer.npe.simulate import Simulations, simulate
from flowinfer.npe.sites import inspect_model
from flowinfer.npe.standardize import PairScaling
from flowinfer.registry import build_flow

__all__ = ["NPE", "DEFAULT_FLOW", "DEFAULT_TRAINING"]

_CONSTANT = ("error", "keep")


class NPE:
    """Neural posterior estimation for a Pyro model whose plain run simulates everything.

    Args:
        model: the Pyro model; ``model(*model_args, **model_kwargs)`` samples every site.
        observed: the data site's name, or a list of names; every other sample site that
            the model does not observe itself is a latent.
        latents: the latent site(s) to infer (default: all of them). The model's other free
            sites (a simulator's internal noise, discrete switches, local latents) are then
            nuisances: simulated along and marginalised, never returned.
        model_args, model_kwargs: the model's arguments (fixed for all simulations).
        flow: a registered flow name (default ``"nsf"``, coupling neural spline flow).
        flow_options: hyper-parameters of the flow (default ``num_layers=5, hidden=(64, 64),
            bins=8``).
        embedding: ``"auto"`` (default: an MLP that passes the data on beside its
            features and one that does not are both trained on the same split and combined,
            see ``combine`` and ``npe.selection``), ``"mlp"``,
            ``"deepset"`` (i.i.d. trials), ``"conv"`` or ``"gru"`` (time series),
            ``"identity"``, or any ``nn.Module`` mapping ``(batch, *data_shape)`` to
            ``(batch, k)``. With several observed sites the data are flattened and
            concatenated first.
        embedding_options: keyword arguments of the named embedding (of both MLPs for
            ``"auto"``; ``skip`` there picks one).
        combine: with several candidates (``"auto"``, or ``replicates`` above 1),
            ``"mixture"`` (default) keeps all of them, weighted to maximise the validation
            likelihood (:mod:`flowinfer.npe.mixture`); ``"best"`` keeps the one with the
            lowest validation loss.
        replicates: how many times each candidate embedding (with its flow) is trained from
            fresh initial weights on the same split; default 2 for ``"auto"`` (a mixture of
            four; training takes twice as long as with 1), 1 otherwise. Runs that differ only
            in their initial weights differ markedly at small budgets, and the mixture keeps
            what each got right (docs/npe.md "Defaults").
        constant_data: ``"error"`` (default) raises when a data column is the same in every
            simulation; ``"keep"`` leaves such columns unscaled.
        standardize: how the latents are scaled for the flow: ``"prior"`` z-scores them
            by the simulations (sbi's choice); ``"regression"`` then subtracts a ridge
            regression on the standardised data and divides by its residual sd
            (:class:`~flowinfer.npe.standardize.RegressionStandardizer`): accurate moments
            where the posterior's location is near-linear in the data, worse posteriors
            where the latents are bounded or the relation is strongly nonlinear;
            ``"mixed"`` gives every second copy of each candidate its own regression (needs
            ``replicates`` >= 2; :mod:`flowinfer.npe.regressed`), the mixture weighs both;
            ``"auto"`` (default): ``"mixed"`` with two or more copies, else ``"prior"``.
        data_space: ``"unconstrained"`` (default) reads observed sites with a bounded
            continuous support through ``biject_to(support).inv`` (log of positive data,
            logit of proportions; :mod:`flowinfer.npe.data_space`); ``"raw"`` as simulated.

    Raises:
        TypeError / ValueError: before any simulation, for a model without latent sites, an
            observed or latent name that is not a free sample site, discrete latent sites
            (name the continuous ones in ``latents``), an unknown flow
            or embedding, or an embedding whose output is not ``(batch, k)``.
    """

    def __init__(
        self,
        model: Callable,
        observed: str | list[str],
        *,
        latents: str | list[str] | None = None,
        model_args: tuple = (),
        model_kwargs: dict | None = None,
        flow: str = "nsf",
        flow_options: dict | None = None,
        embedding: str | nn.Module = "auto",
        embedding_options: dict | None = None,
        combine: str = "mixture",
        replicates: int | None = None,
        constant_data: str = "error",
        standardize: str = "auto",
        data_space: str = "unconstrained",
    ) -> None:
        if not isinstance(model_args, tuple):
            raise TypeError(f"model_args must be a tuple, got {type(model_args).__name__}")
        if model_kwargs is not None and not isinstance(model_kwargs, dict):
            raise TypeError(f"model_kwargs must be a dict, got {type(model_kwargs).__name__}")
        self.model, self.model_args = model, model_args
        self.model_kwargs = dict(model_kwargs or {})
        self.constant_data = check_choice(constant_data, "constant_data", _CONSTANT)
        self.combine = check_choice(combine, "combine", ("best", "mixture"))
        self.data_space = check_choice(data_space, "data_space", DATA_SPACES)
        self.info = inspect_model(model, observed, model_args, self.model_kwargs, latents)
        self.observed = list(self.info.observed_names)
        names = self.info.observed_names
        self.data_shape = (tuple(self.info.observed_shapes[names[0]]) if len(names) == 1
                           else (self.info.data_dim,))
        options = posterior_flow_options(flow, flow_options)
        replicates, self.standardize = member_settings(embedding, replicates, standardize)
        self._candidates = embedding_candidates(
            embedding, embedding_options, self.data_shape,
            lambda k: build_flow(flow, dim=self.info.latent_dim, context_dim=k, **options),
            replicates, regressed=self.standardize == "mixed",
            located=sum(site.size for site in bounded_sites(self.info)))
        # Each sequential round starts again from these (see _restart).
        self._untrained = copy.deepcopy(self._candidates)
        self._use(self._candidates[0])
        self.selection: dict[str, Any] | None = None
        # The maps between pairs and the networks' inputs, fitted on the first training.
        self.scaling: PairScaling | None = None
        self.simulations: Simulations | None = None
        self.results: list[Any] = []
        self.timings: dict[str, float] = {"simulation": 0.0, "training": 0.0}
        # Later rounds' regions: prior mass, share inside (sequential.simulate_round).
        self.truncation, self.truncation_inside = [], None
        # sequential="atomic": how many leading simulations came from the prior.
        self.sequential, self.prior_pairs = "truncated", None
        self._spec = None

    # ------------------------------------------------------------------ data
    def _pack_x(self, observed: dict[str, Tensor], observation: bool = False) -> Tensor:
        return pack_data(self.info, observed, self.data_space, observation)

    def _pool(self) -> tuple[int, ...]:
        return embedding_pool(self.embedding, self.data_shape)

    def _spec_for_simulation(self, vectorize: bool | None):
        if self._spec is None or (vectorize is not None and
                                  vectorize != (self._spec.layouts is not None)):
            self._spec = make_spec(self.model, self.info, self.model_args, self.model_kwargs,
                                   vectorize)
        return self._spec

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        num_simulations: int | None = None,
        *,
        simulations: Simulations | dict[str, Tensor] | None = None,
        rounds: int = 1,
        observation: Any = None,
        sequential: str = "truncated",
        seed: int | None = None,
        num_workers: int = 0,
        executor: Any = None,
        simulation_file: Any = None,
        chunk_size: int | None = None,
        vectorize: bool | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
        val_fraction: float | None = None,
        patience: int | None = None,
        weight_decay: float | None = None,
        progress: bool | None = None,
    ) -> Any:
        """Simulate (unless ``simulations`` are given), then train the posterior flow.

        Args:
            num_simulations: the simulation budget (over all rounds), a positive integer.
            simulations: pairs the user already has: a :class:`Simulations` or a dict
                ``{site: (N, *shape)}`` holding every latent and observed site. With
                ``num_simulations`` as well, that many more are simulated and added.
            rounds: 1 for amortized NPE; more for truncated sequential NPE focused on
                ``observation`` (see :mod:`flowinfer.npe.sequential`); ``npe.truncation``
                then holds each later round's region's prior mass (near 1: the rounds
                barely focus), ``npe.truncation_inside`` the median share of round 2's
                pairs' posteriors inside its region (low: most pairs teach cut ones).
            observation: the data to focus on (required when ``rounds > 1``).
            sequential: how later rounds propose and train: ``"truncated"`` (default: the
                prior cut to ``q``'s region, maximum likelihood) or ``"atomic"`` (``q``
                itself, the atomic APT loss); :mod:`flowinfer.npe.sequential` compares them.
            seed: seeds the simulations and the training (None: from torch's generator).
            num_workers, executor, simulation_file, chunk_size, vectorize: simulation
                options (see :func:`flowinfer.npe.simulate.simulate`).
            epochs, batch_size, lr, val_fraction, patience, weight_decay: training options
                (None: the defaults in ``DEFAULT_TRAINING``; weight decay is AdamW's).
            progress: progress bars (None: only on a terminal).

        Returns:
            The training loop's ``FitResult`` of the last round (all rounds are in
            ``npe.results``).

        Raises:
            TypeError / ValueError: a budget that is not a positive integer, no budget and
                no simulations, ``rounds > 1`` without a (well-shaped) observation or with
                nuisance sites sampled before a latent, an unknown ``sequential`` or one
                other than the default with one round; all before any simulation.
        """
        if num_simulations is None and simulations is None:
            raise ValueError("give num_simulations (a positive integer) or simulations=")
        if num_simulations is not None:
            num_simulations = check_int(num_simulations, "num_simulations")
        rounds, x_obs = sequential_options(rounds, observation, num_simulations, self.info)
        if x_obs is not None:  # on a support bound: raise now, before any simulation
            self._pack_x({k: v[None] for k, v in x_obs.items()}, observation=True)
        sequential = check_choice(sequential, "sequential", ("truncated", "atomic"))
        if rounds == 1 and sequential != "truncated":
            raise ValueError(f"sequential={sequential!r} is used by sequential rounds only "
                             "(rounds > 1)")
        train = training_options(epochs, batch_size, lr, val_fraction, patience, weight_decay)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        seed = check_int(seed, "seed", lowest=0)
        given = given_simulations(simulations, self.info)
        sim_options = {"seed": seed, "num_workers": num_workers, "executor": executor,
                       "chunk_size": chunk_size, "progress": progress}
        per_round = round_budgets(num_simulations, rounds)
        sims = given
        if per_round and per_round[0] > 0:
            start = time.perf_counter()
            new = simulate(self.model, self.observed, per_round[0],
                           model_args=self.model_args, model_kwargs=self.model_kwargs,
                           path=simulation_file, info=self.info,
                           spec=self._spec_for_simulation(vectorize), **sim_options)
            self.timings["simulation"] += time.perf_counter() - start
            sims = new if sims is None else sims.extend(new)
        self.simulations, self.prior_pairs, self.sequential = sims, None, sequential
        result = self._train(sims, train, seed, progress)
        self.truncation, self.truncation_inside = [], None
        if rounds > 1 and self.sequential == "atomic":
            self.prior_pairs = len(sims)  # the atomic loss needs them: those before round 2
        for r in range(1, rounds):
            from flowinfer.npe.sequential import simulate_round

            sims = sims.extend(simulate_round(self, x_obs, per_round[r],
                                              {**sim_options, "seed": seed + r}))
            self.simulations = sims
            self._restart()
            result = self._train(sims, train, seed + r, progress)
        return result

    def _restart(self) -> None:
        """Untrained networks and no standardisers, so a sequential round trains afresh on
        all pairs so far. Why not continue the last round's networks: on those pairs they
        overfit within an epoch or two (they had already fitted most of them), early
        stopping then kept them almost as they were, and ten rounds of 1,000 came out worse
        than one round of 10,000 (docs/npe.md "Sequential rounds")."""
        self._candidates = copy.deepcopy(self._untrained)
        self._use(self._candidates[0])
        self.scaling = None

    def _use(self, candidate: Candidate) -> None:
        self.embedding, self.flow = candidate.embedding, candidate.flow
        self.embedding_kind, self.embedding_options = candidate.kind, candidate.options

    def _train(self, sims: Simulations, train: dict, seed: int, progress: bool | None):
        from flowinfer.npe.training import train_round

        return train_round(self, sims, train, seed, progress)

    # ------------------------------------------------------------------ posterior
    def _check_fitted(self) -> None:
        if self.scaling is None:
            raise RuntimeError("this NPE is not trained yet: call npe.fit(...) first")

    def _context(self, x: Any) -> tuple[Tensor, Tensor]:
        """The features of one data set ``x`` and its standardised data ``(1, *shape)``."""
        observed = self.info.check_observation(x)
        xs = self.scaling.data(self._pack_x({k: v[None] for k, v in observed.items()}, True))
        with torch.no_grad():
            return self.embedding(xs)[0], xs

    @torch.no_grad()
    def sample_unconstrained(self, num_samples: int, x: Any) -> Tensor:
        """``(num_samples, latent_dim)`` draws of the unconstrained latents given ``x``."""
        self._check_fitted()
        num_samples = check_int(num_samples, "num_samples")
        context, xs = self._context(x)
        parts, left = [], num_samples
        while left > 0:
            n = min(left, 100_000)
            parts.append(self.flow.sample((n,), context=context))
            left -= n
        return self.scaling.from_flow(torch.cat(parts), xs)

    @torch.no_grad()
    def sample(self, num_samples: int, x: Any) -> dict[str, Tensor]:
        """``{latent site: (num_samples, *shape)}`` posterior draws given data ``x``.

        ``x`` is a tensor shaped like the observed site (or ``{site: tensor}`` for several).
        Draws are in the constrained space, inside each site's support by construction.
        """
        u = self.sample_unconstrained(num_samples, x)
        return self.info.to_constrained(u)[0]

    def log_prob_unconstrained(self, u: Tensor, x: Any) -> Tensor:
        """``log q(u | x)`` of unconstrained latents ``(..., latent_dim)``."""
        self._check_fitted()
        context, xs = self._context(x)
        z = self.scaling.to_flow(u, xs)
        lq = self.flow.log_prob(z, context.expand(*z.shape[:-1], context.shape[-1]))
        return lq + self.scaling.log_abs_det()

    def log_prob(self, values: dict[str, Tensor], x: Any) -> Tensor:
        """The estimated posterior log density of ``values`` (constrained space) given ``x``.

        Args:
            values: ``{latent site: (*batch, *site_shape)}`` for every latent site.
            x: the data, as for :meth:`sample`.

        Returns:
            ``(*batch,)`` log densities with respect to the constrained latents (the
            Jacobian of the map to unconstrained space included); ``-inf`` outside the
            prior's support.
        """
        self._check_fitted()
        flat, batch = self.info.check_values(values)
        inside = self.info.in_support(flat)
        safe = {k: torch.where(inside.reshape(-1, *[1] * (v.dim() - 1)), v,
                               self.info.transforms[k](torch.zeros(
                                   self.info.unconstrained_shapes[k])).expand_as(v))
                for k, v in flat.items()}
        u = self.info.to_unconstrained(safe)
        _, ladj = self.info.to_constrained(u)
        lp = self.log_prob_unconstrained(u, x) - ladj
        lp = torch.where(inside, lp, torch.full_like(lp, -math.inf))
        return lp.reshape(batch)

    def to_inference_data(self, x: Any, num_samples: int = 4000):
        """Posterior draws for data ``x`` as an ``arviz.InferenceData`` (one chain).

        Groups: ``posterior`` (each latent site, its shape kept), ``sample_stats``
        (``log_q``, the estimated log density of each draw) and ``observed_data``.
        """
        from flowinfer.npe.inference_data import inference_data

        return inference_data(self, x, num_samples)

    # ------------------------------------------------------------------ checkpoints
    def to_checkpoint(self) -> dict[str, Any]:
        """The flow and what rebuilds the estimator around it (used by ``fi.save``).

        Returns ``{"flow": flow, "object": record}``; the record holds only tensors and
        plain values (the embedding's and standardisers' states, the site names; for a
        mixture the first component is ``flow`` and the record holds the others).
        """
        self._check_fitted()
        return {"flow": saved_flow(self), "object": npe_record(self)}

    @classmethod
    def from_checkpoint(cls, flow: nn.Module, record: dict[str, Any], *, model: Callable = None,
                        model_args: tuple = (), model_kwargs: dict | None = None,
                        path: Any = "<checkpoint>", embedding: nn.Module | None = None) -> NPE:
        """Rebuild a trained NPE around ``model`` from its loaded flow and saved record.

        ``fi.load(path, model=model)`` calls this. An NPE trained with a custom embedding
        module needs that module again: ``ckpt = fi.io.load_checkpoint(path)``, then
        ``NPE.from_checkpoint(fi.io.from_checkpoint(ckpt), ckpt["object"], model=model,
        embedding=MyNet())``.

        Raises:
            ValueError: no model, a custom embedding not given again, or a model whose
                latent sites or shapes differ from the saved estimator's.
        """
        return rebuild_npe(cls, flow, record, model=model, model_args=model_args,
                           model_kwargs=model_kwargs, path=path, embedding=embedding)

    def __repr__(self) -> str:
        state = "trained" if self.scaling is not None else "untrained"
        return (f"NPE(latents={self.info.latent_names}, observed={self.observed}, "
                f"flow={self.flow.config['name']!r}, {state})")
