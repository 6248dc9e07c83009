"""Pyro versions of six posteriordb models, with their data and Stan reference draws.

Each model follows the description in ``../shared/data/README.md`` (same data-field and
parameter names). The models are written to broadcast over leading batch dimensions (no
plates; observations are one ``to_event(1)`` site), so Pyro can vectorize particles and
importance draws over them. Flat priors use ``dist.ImproperUniform``; initialise such models
with :func:`init_loc_fn`, which does not sample those sites.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from flowinfer.inference.sites import init_to_median_or_zero

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "posteriordb"

POSTERIORS = (
    "eight_schools-eight_schools_noncentered",
    "kidiq-kidscore_interaction",
    "sblrc-blr",
    "nes2000-nes",
    "gp_pois_regr-gp_pois_regr",
    "diamonds-diamonds",
)


#: ``init_to_median``, except on flat (``ImproperUniform``) sites, which cannot be sampled.
init_loc_fn = init_to_median_or_zero


def _flat(support: constraints.Constraint, size: int | None = None) -> dist.ImproperUniform:
    event = () if size is None else (size,)
    return dist.ImproperUniform(support, (), event)


def eight_schools(y: torch.Tensor, sigma: torch.Tensor) -> None:
    j = y.shape[-1]
    theta_trans = pyro.sample("theta_trans", dist.Normal(y.new_zeros(j), 1.0).to_event(1))
    mu = pyro.sample("mu", dist.Normal(y.new_tensor(0.0), 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(y.new_tensor(5.0)))
    theta = pyro.deterministic("theta", mu[..., None] + tau[..., None] * theta_trans, 1)
    pyro.sample("y", dist.Normal(theta, sigma).to_event(1), obs=y)


def kidiq_interaction(kid_score, mom_hs, mom_iq) -> None:
    beta = pyro.sample("beta", _flat(constraints.real, 4))
    sigma = pyro.sample("sigma", dist.HalfCauchy(kid_score.new_tensor(2.5)))
    b = beta[..., None, :]
    mu = b[..., 0] + b[..., 1] * mom_hs + b[..., 2] * mom_iq + b[..., 3] * mom_hs * mom_iq
    pyro.sample("kid_score", dist.Normal(mu, sigma[..., None]).to_event(1), obs=kid_score)


def blr(X, y) -> None:
    d = X.shape[-1]
    beta = pyro.sample("beta", dist.Normal(X.new_zeros(d), 10.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(X.new_tensor(10.0)))
    pyro.sample("y", dist.Normal(beta @ X.T, sigma[..., None]).to_event(1), obs=y)


def nes(design, partyid7) -> None:
    beta = pyro.sample("beta", _flat(constraints.real, design.shape[-1]))
    sigma = pyro.sample("sigma", _flat(constraints.positive))
    pyro.sample("partyid7", dist.Normal(beta @ design.T, sigma[..., None]).to_event(1),
                obs=partyid7)


def gp_pois_regr(x, k) -> None:
    n = x.shape[-1]
    rho = pyro.sample("rho", dist.Gamma(x.new_tensor(25.0), 4.0))
    alpha = pyro.sample("alpha", dist.HalfNormal(x.new_tensor(2.0)))
    f_tilde = pyro.sample("f_tilde", dist.Normal(x.new_zeros(n), 1.0).to_event(1))
    d2 = (x[:, None] - x[None, :]) ** 2
    cov = alpha[..., None, None] ** 2 * torch.exp(-d2 / (2 * rho[..., None, None] ** 2))
    cov = cov + 1e-10 * torch.eye(n, dtype=x.dtype, device=x.device)
    # Stan adds only 1e-10; in float64 the Cholesky of this near-singular kernel still works.
    f = pyro.deterministic(
        "f", (torch.linalg.cholesky(cov) @ f_tilde[..., None]).squeeze(-1), 1
    )
    pyro.sample("k", dist.Poisson(torch.exp(f)).to_event(1), obs=k)


def diamonds(Xc, Y) -> None:
    kb = Xc.shape[-1]
    b = pyro.sample("b", dist.Normal(Xc.new_zeros(kb), 1.0).to_event(1))
    intercept = pyro.sample("Intercept", dist.StudentT(Xc.new_tensor(3.0), 8.0, 10.0))
    sigma = pyro.sample("sigma", dist.FoldedDistribution(
        dist.StudentT(Xc.new_tensor(3.0), 0.0, 10.0)))
    mu = intercept[..., None] + b @ Xc.T
    pyro.sample("Y", dist.Normal(mu, sigma[..., None]).to_event(1), obs=Y)


@dataclass
class Posterior:
    """A posteriordb posterior ready for Pyro: model, its arguments, reference draws."""

    name: str
    model: Callable
    args: tuple
    reference: dict[str, np.ndarray]  # "param[i]" -> pooled reference draws (all chains)

    def reference_matrix(self) -> tuple[list[str], np.ndarray]:
        names = list(self.reference)
        return names, np.stack([self.reference[n] for n in names], axis=-1)


def _read_zip_json(path: Path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(zf.namelist()[0]))


def load(name: str, dtype: torch.dtype = torch.float64) -> Posterior:
    """Model, data and pooled reference draws of one posterior (``FileNotFoundError`` if absent)."""
    if name not in POSTERIORS:
        raise ValueError(f"unknown posterior {name!r}; known: {', '.join(POSTERIORS)}")
    folder = DATA_DIR / name
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found (the shared posteriordb data)")
    data = _read_zip_json(folder / "data.json.zip")
    chains = _read_zip_json(folder / "reference_draws.json.zip")
    reference = {k: np.concatenate([np.asarray(c[k], dtype=float) for c in chains])
                 for k in chains[0]}

    def t(key):
        return torch.tensor(data[key], dtype=dtype)

    if name.startswith("eight_schools"):
        model, args = eight_schools, (t("y"), t("sigma"))
    elif name.startswith("kidiq"):
        model, args = kidiq_interaction, (t("kid_score"), t("mom_hs"), t("mom_iq"))
    elif name.startswith("sblrc"):
        model, args = blr, (t("X"), t("y"))
    elif name.startswith("nes2000"):
        age = t("age_discrete")
        columns = [torch.ones_like(age), t("real_ideo"), t("race_adj"), (age == 2).to(dtype),
                   (age == 3).to(dtype), (age == 4).to(dtype), t("educ1"), t("gender"),
                   t("income")]
        model, args = nes, (torch.stack(columns, -1), t("partyid7"))
    elif name.startswith("gp_pois"):
        model, args = gp_pois_regr, (t("x"), t("k"))
    else:
        X = t("X")[:, 1:]
        model, args = diamonds, (X - X.mean(0), t("Y"))
    return Posterior(name, model, args, reference)


def flatten_draws(samples: dict[str, torch.Tensor], names: list[str]) -> np.ndarray:
    """Map ``{"beta": (S, 4), ...}`` onto the reference's ``"beta[1]"``-style columns."""
    cols = []
    for ref_name in names:
        base, _, index = ref_name.partition("[")
        value = samples[base].detach().cpu().double().numpy()
        if index:
            value = value.reshape(value.shape[0], -1)[:, int(index.rstrip("]")) - 1]
        cols.append(value.reshape(value.shape[0]))
    return np.stack(cols, axis=-1)
