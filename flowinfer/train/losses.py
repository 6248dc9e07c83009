"""Loss objects for the training loop: maximum likelihood, reverse KL, mass-covering KL.

A loss object is called on a batch and returns the scalar to minimise. In mini-batch training
the batch is a tuple of row tensors; in sampled training (no data) it is ``None`` and the loss
draws its own samples. The loop also reads a few optional hooks, all with defaults here in
:class:`Loss`: ``evaluate`` (the validation value), ``begin_step`` (told the step number before
each sampled step, e.g. for annealing), ``metrics`` (floats recorded per step in the history),
``monitor`` (which value the loop smooths and watches), ``settled`` (whether that value may
count as the best so far) and ``context`` (a context manager around the whole run).

Example:
    >>> import torch, flowinfer as fi
    >>> flow = fi.build_flow("realnvp", dim=2, num_layers=1, hidden=(8,))   # N(0, I)
    >>> round(float(MaximumLikelihood(flow)((torch.zeros(4, 2),))), 4)     # log(2 pi)
    1.8379

References:
    Papamakarios et al. (2021), "Normalizing Flows for Probabilistic Modeling and
    Inference", JMLR 22(57).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import pyro
import torch
from torch import Tensor, nn
from torch.func import functional_call

from flowinfer.checks import check_choice, check_int, check_number

__all__ = ["Loss", "MaximumLikelihood", "ReverseKL", "MassCovering", "annealing_schedule",
           "ANNEAL_SCHEDULES", "ESTIMATORS"]

ANNEAL_SCHEDULES = ("geometric", "linear")
ESTIMATORS = ("standard", "stl")
LogDensity = Callable[[Tensor], Tensor]


class Loss:
    """Base class of the loop's loss objects; subclasses implement ``__call__``.

    Attributes:
        modules: the modules this loss trains (the default for ``fit``'s ``modules``).
        monitor: the history key the loop smooths and watches in sampled training.
    """

    modules: list[nn.Module] = []
    monitor: str = "loss"

    def __call__(self, batch: Any) -> Tensor:
        raise NotImplementedError

    def evaluate(self, batch: Any) -> Tensor:
        """The validation value of ``batch`` (by default the loss itself, without gradients)."""
        with torch.no_grad():
            return self(batch)

    def begin_step(self, step: int) -> None:
        """Called before each step of sampled training."""

    def metrics(self) -> dict[str, float]:
        """Per-step values for the history (besides ``"loss"``)."""
        return {}

    @property
    def settled(self) -> bool:
        """Whether the monitored value may count as the best so far (False while annealing)."""
        return True

    def context(self) -> contextlib.AbstractContextManager:
        """A context manager around the whole run."""
        return contextlib.nullcontext()


class MaximumLikelihood(Loss):
    """Mean negative log-likelihood ``-mean_i log q(x_i | c_i)`` of a batch ``(x,)`` or ``(x, c)``.

    Pyro's argument validation is off during the run: the data are checked once up front, and
    the per-batch support check would turn NaN parameters (a diverged step) into a
    ``ValueError`` instead of the non-finite stop that restores the best parameters.
    """

    def __init__(self, flow: nn.Module) -> None:
        self.flow = flow
        self.modules = [flow]

    def __call__(self, batch: tuple[Tensor, ...]) -> Tensor:
        return -self.flow.log_prob(*batch).mean()

    def context(self) -> contextlib.AbstractContextManager:
        return pyro.validation_enabled(False)


def annealing_schedule(
    step: int, anneal_steps: int, anneal_start: float = 0.01, kind: str = "geometric"
) -> float:
    """Inverse temperature ``beta`` at ``step`` of a tempered fit.

    ``beta`` rises from ``anneal_start`` at step 0 to 1 at step ``anneal_steps`` and stays 1.
    ``"geometric"`` spaces ``log beta`` evenly (``beta_t = anneal_start ** (1 - t/T)``), the
    usual choice for tempering paths because consecutive tempered densities then differ by
    similar amounts; ``"linear"`` spaces ``beta`` evenly and spends more steps near 1.

    Example:
        >>> [round(annealing_schedule(t, 4, 0.01), 4) for t in range(6)]
        [0.01, 0.0316, 0.1, 0.3162, 1.0, 1.0]
        >>> round(annealing_schedule(2, 4, 0.2, kind="linear"), 4)
        0.6
    """
    check_choice(kind, "anneal_schedule", ANNEAL_SCHEDULES)
    if anneal_steps == 0 or step >= anneal_steps:
        return 1.0
    frac = step / anneal_steps
    if kind == "geometric":
        return anneal_start ** (1.0 - frac)
    return anneal_start + (1.0 - anneal_start) * frac


def evaluate_target(log_density: LogDensity, x: Tensor) -> Tensor:
    """``log_density(x)`` after checking that it returned one value per point."""
    out = log_density(x)
    if not isinstance(out, Tensor) or out.shape != x.shape[:-1]:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"target must return a tensor of shape {tuple(x.shape[:-1])} for points of shape "
            f"{tuple(x.shape)} (one log density per point), got {got}. A Pyro model with "
            "arguments needs model_args=/model_kwargs=; a callable target must work on "
            "batches and have the flow's dim."
        )
    return out


class _LogProbCall(nn.Module):
    """Routes ``forward`` to ``flow.log_prob`` so ``functional_call`` can swap parameters."""

    def __init__(self, flow: nn.Module) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor) -> Tensor:
        return self.flow.log_prob(x)


def _stl_log_q(flow: nn.Module, x: Tensor) -> Tensor:
    # log q at the (path-differentiable) samples x with the parameters cut out of the graph:
    # the score term E_q[d/dtheta log q] is zero in expectation but not per sample; dropping it
    # leaves the path derivative, whose variance vanishes as q approaches p (Roeder et al.).
    detached = {f"flow.{k}": p.detach() for k, p in flow.named_parameters()}
    try:
        return functional_call(_LogProbCall(flow), detached, (x,))
    except NotImplementedError as err:
        raise ValueError(
            "estimator='stl' needs log q of the flow's samples through the flow's inverse, "
            f"which this flow lacks ({err}); use estimator='standard'"
        ) from err


class ReverseKL(Loss):
    """``E_q[log q(x) - beta log p~(x)]`` from ``num_samples`` reparameterised draws of ``q``.

    Draws where the target is ``-inf`` (outside a bounded support) are left out of the average
    and their share is reported as the metric ``"outside"``; NaN and ``+inf`` are kept, so
    they stop training. ``beta`` follows :func:`annealing_schedule` over the first
    ``anneal_steps`` steps. The monitored value is ``"loss_at_one"``, the same draws' loss at
    ``beta = 1`` (in expectation an upper bound on ``-log Z``).

    Args:
        flow: the flow ``q`` (unconditional).
        log_density: batched unnormalized log density of the target.
        num_samples: draws per step.
        estimator: ``"standard"`` (reparameterisation gradient) or ``"stl"`` (sticking the
            landing: the path derivative only).
        anneal_steps, anneal_start, anneal_schedule: the tempering path of ``beta``.

    Example:
        >>> import flowinfer as fi
        >>> flow = fi.build_flow("realnvp", dim=2, num_layers=2, hidden=(16,))
        >>> loss = ReverseKL(flow, lambda x: -0.5 * (x**2).sum(-1), 128)
        >>> float(loss(None)) > -2.0    # -log Z = -log(2 pi) ~= -1.84 is the minimum
        True

    References:
        Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows", ICML.
        Roeder, Wu & Duvenaud (2017), "Sticking the Landing", NeurIPS.
    """

    monitor = "loss_at_one"

    def __init__(self, flow: nn.Module, log_density: LogDensity, num_samples: int = 256, *,
                 estimator: str = "standard", anneal_steps: int = 0, anneal_start: float = 0.01,
                 anneal_schedule: str = "geometric") -> None:
        self.flow = flow
        self.modules = [flow]
        self.log_density = log_density
        self.num_samples = check_int(num_samples, "num_samples", 2)
        self.stl = check_choice(estimator, "estimator", ESTIMATORS) == "stl"
        self.anneal_steps = check_int(anneal_steps, "anneal_steps", 0)
        self.anneal_start = check_number(anneal_start, "anneal_start", low=0.0, high=1.0,
                                         low_open=True)
        self.anneal_schedule = check_choice(anneal_schedule, "anneal_schedule",
                                            ANNEAL_SCHEDULES)
        self.beta = 1.0
        self._metrics: dict[str, float] = {}

    def begin_step(self, step: int) -> None:
        self.beta = annealing_schedule(step, self.anneal_steps, self.anneal_start,
                                       self.anneal_schedule)

    @property
    def settled(self) -> bool:
        return self.beta == 1.0

    def metrics(self) -> dict[str, float]:
        return self._metrics

    def __call__(self, batch: Any = None) -> Tensor:
        x, log_q = self.flow.rsample_and_log_prob((self.num_samples,))
        if self.stl:
            log_q = _stl_log_q(self.flow, x)
        log_p = evaluate_target(self.log_density, x)
        inside = ~torch.isneginf(log_p)
        count = int(inside.sum())
        outside = 1.0 - count / self.num_samples
        if count == 0:
            self._metrics = {"beta": self.beta, "loss_at_one": math.inf, "outside": outside}
            return torch.full((), math.inf, dtype=log_q.dtype, device=log_q.device)
        safe_log_p = torch.where(inside, log_p, torch.zeros_like(log_p))
        log_q_in, log_p_in = log_q[inside], safe_log_p[inside]
        loss = (log_q_in - self.beta * log_p_in).mean()
        at_one = loss if self.beta == 1.0 else (log_q_in - log_p_in).mean()
        self._metrics = {"beta": self.beta, "loss_at_one": float(at_one.detach()),
                         "outside": outside}
        return loss


class MassCovering(ReverseKL):
    """Self-normalised importance-weighted forward KL, ``-sum_i w_i log q(x_i)``.

    ``x_i ~ q`` are held fixed and ``w = softmax(beta log p~ - log q)``: the expected gradient
    is that of ``KL(p^beta || q)`` (up to the self-normalisation bias), which raises ``q``
    wherever the target has mass that ``q`` under-weights: mass covering, where reverse KL is
    mode seeking. Needs ``log q`` through the flow's inverse. Same arguments and metrics as
    :class:`ReverseKL` (``estimator`` is unused).

    Example:
        >>> import flowinfer as fi
        >>> flow = fi.build_flow("realnvp", dim=2, num_layers=1, hidden=(8,))
        >>> loss = MassCovering(flow, lambda x: -0.5 * (x**2).sum(-1), 64)
        >>> loss(None).backward()

    References:
        Müller et al. (2019), "Neural Importance Sampling", ACM Transactions on Graphics.
    """

    def __call__(self, batch: Any = None) -> Tensor:
        with torch.no_grad():
            x, log_q = self.flow.sample_and_log_prob((self.num_samples,))
            log_p = evaluate_target(self.log_density, x).detach()
            weights = torch.softmax(self.beta * log_p - log_q, dim=0)
            inside = ~torch.isneginf(log_p)
            count = int(inside.sum())
            at_one = float((log_q[inside] - log_p[inside]).mean()) if count else math.inf
        try:
            log_q_live = self.flow.log_prob(x)
        except NotImplementedError as err:
            raise ValueError(
                "cover_steps needs log q of the flow's samples through the flow's inverse, "
                f"which this flow lacks ({err}); use cover_steps=0"
            ) from err
        self._metrics = {"beta": self.beta, "loss_at_one": at_one,
                         "outside": 1.0 - count / self.num_samples}
        # Zero-weight samples may sit where log q is -inf in float precision; 0 * -inf is NaN.
        return -(weights * torch.where(weights > 0, log_q_live,
                                       torch.zeros_like(log_q_live))).sum()


class Switch(Loss):
    """``first`` for the steps before ``switch_at``, ``second`` after (sampled training)."""

    def __init__(self, first: Loss, second: Loss, switch_at: int) -> None:
        self.first, self.second, self.switch_at = first, second, switch_at
        self.modules = list(second.modules)
        self.monitor = second.monitor
        self.current = first if switch_at > 0 else second

    def begin_step(self, step: int) -> None:
        self.current = self.first if step < self.switch_at else self.second
        self.current.begin_step(step)

    def __call__(self, batch: Any) -> Tensor:
        return self.current(batch)

    def metrics(self) -> dict[str, float]:
        return self.current.metrics()

    @property
    def settled(self) -> bool:
        return self.current.settled
