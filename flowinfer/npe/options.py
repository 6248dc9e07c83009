"""NPE's training defaults and the checks of ``NPE.fit``'s options (all before simulating).

Example:
    >>> round_budgets(1000, 3)
    [334, 333, 333]
    >>> auto_batch(1000), auto_batch(10_000)
    (50, 256)
"""

from __future__ import annotations

from typing import Any

from flowinfer.checks import check_int, check_number
from flowinfer.npe.simulations import Simulations
from flowinfer.npe.sites import ModelInfo
from flowinfer.registry import get_flow_spec

__all__ = ["DEFAULT_FLOW", "DEFAULT_TRAINING", "posterior_flow_options", "auto_batch",
           "round_budgets", "sequential_options", "training_options", "given_simulations",
           "plain", "tuples"]

#: The posterior flow's defaults (see docs/npe.md for the measurements behind them).
DEFAULT_FLOW = {"name": "nsf", "num_layers": 5, "hidden": (64, 64), "bins": 8}

#: Training defaults; ``batch_size=None`` means ``clamp(N // 20, 32, 256)`` for N pairs.
DEFAULT_TRAINING = {"epochs": 1000, "batch_size": None, "lr": 1e-3, "val_fraction": 0.1,
                    "patience": 20, "schedule": "plateau", "clip_grad": 5.0, "weight_decay": 0.0}


def posterior_flow_options(flow: Any, flow_options: dict | None) -> dict[str, Any]:
    """The posterior flow's options (defaults filled in for the default flow), after checking
    that ``flow`` names a registered flow with a context and an analytic inverse.

    Example:
        >>> posterior_flow_options("nsf", {"bins": 4})["bins"], posterior_flow_options("maf", None)
        (4, {})

    Raises:
        TypeError: ``flow`` is not a string. ValueError: an unknown flow, or one without a
            context or an analytic inverse.
    """
    if not isinstance(flow, str):
        raise TypeError(f"flow must be a registered flow name, got {type(flow).__name__}")
    spec = get_flow_spec(flow)
    if not spec.supports_context or not spec.has_inverse:
        raise ValueError(f"flow {flow!r} cannot be an NPE posterior: it needs a context "
                         "and an analytic inverse (e.g. 'nsf', 'maf', 'realnvp', 'nsf-ar')")
    options = dict(flow_options or {})
    if flow == DEFAULT_FLOW["name"]:
        options = {**{k: v for k, v in DEFAULT_FLOW.items() if k != "name"}, **options}
    return options


def plain(value: Any) -> Any:
    """``value`` with tuples turned into lists (checkpoints hold plain values)."""
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def tuples(value: dict) -> dict:
    """A dict's list values back to tuples (hyper-parameters such as ``hidden``)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}


def auto_batch(n: int) -> int:
    """The default batch size for ``n`` training pairs: ``clamp(n // 20, 32, 256)``."""
    return int(min(256, max(32, n // 20)))


def round_budgets(total: int | None, rounds: int) -> list[int]:
    """Simulations per round: equal shares, the first round taking the remainder."""
    if total is None:
        return []
    base = total // rounds
    return [total - base * (rounds - 1)] + [base] * (rounds - 1)


def sequential_options(rounds: Any, observation: Any, num_simulations: int | None,
                       info: ModelInfo) -> tuple[int, Any]:
    """``rounds`` checked and the checked observation (None for one round).

    Example:
        >>> sequential_options(1, None, 1000, info=None)  # one round needs no model facts
        (1, None)

    Raises:
        TypeError / ValueError: ``rounds`` not a positive integer; more than one round without
            an observation, with fewer than two simulations per round or with nuisance
            sites sampled before a latent; an observation with one round.
    """
    rounds = check_int(rounds, "rounds")
    if rounds == 1:
        if observation is not None:
            raise ValueError("observation= is used by sequential rounds only (rounds > 1)")
        return rounds, None
    if observation is None:
        raise ValueError("rounds > 1 (sequential NPE) needs observation=<the data>")
    if num_simulations is None or num_simulations < 2 * rounds:
        raise ValueError(f"rounds={rounds} needs num_simulations >= {2 * rounds}, got "
                         f"{num_simulations}")
    x_obs = info.check_observation(observation, "observation")
    if info.nuisance_first:
        # The truncated prior needs the latents' prior density, which may depend on
        # nuisance sites drawn before them.
        raise ValueError(f"sequential rounds need the prior density of the latents, "
                         f"but nuisance site(s) {info.nuisance_first} are sampled "
                         "before latent sites; add them to latents= or use rounds=1")
    return rounds, x_obs


def given_simulations(simulations: Any, info: ModelInfo) -> Simulations | None:
    """The user's ``simulations=`` as a checked :class:`Simulations` (or None)."""
    if simulations is None:
        return None
    if isinstance(simulations, dict):
        simulations = Simulations(
            {k: simulations[k] for k in info.latent_names if k in simulations},
            {k: simulations[k] for k in info.observed_names if k in simulations})
    if not isinstance(simulations, Simulations):
        raise TypeError(f"simulations must be a Simulations or a dict {{site: tensor}}, "
                        f"got {type(simulations).__name__}")
    simulations.check_against(info)
    return simulations


def training_options(epochs: Any, batch_size: Any, lr: Any, val_fraction: Any,
                     patience: Any, weight_decay: Any = None) -> dict[str, Any]:
    """The training options with defaults filled in, each checked."""
    d = DEFAULT_TRAINING
    return {
        "epochs": check_int(d["epochs"] if epochs is None else epochs, "epochs"),
        "batch_size": check_int(batch_size, "batch_size", allow_none=True),
        "lr": check_number(d["lr"] if lr is None else lr, "lr", low=0.0, low_open=True),
        "val_fraction": check_number(d["val_fraction"] if val_fraction is None
                                     else val_fraction, "val_fraction", low=0.0,
                                     high=1.0, high_open=True),
        "patience": check_int(d["patience"] if patience is None else patience, "patience"),
        "weight_decay": check_number(d["weight_decay"] if weight_decay is None
                                     else weight_decay, "weight_decay", low=0.0),
    }
