"""The one-screen text report of ``fi.infer``."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["format_report"]


def _num(value: Any, fmt: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def format_report(info: dict) -> str:
    """What ``fi.infer`` did, what it measured and whether the draws passed the checks.

    Example:
        >>> print(format_report({"route": "vi", "checks_passed": True, "khat": 0.31,
        ...                      "ess": 2500.0, "timings": {"total": 3.2}}).splitlines()[0])
        fi.infer: route vi, checks passed (3.2 s)
    """
    timings = info.get("timings", {})
    verdict = "checks passed" if info.get("checks_passed") else "CHECKS FAILED"
    lines = [f"fi.infer: route {info.get('route')}, {verdict} "
             f"({_num(timings.get('total'), '.1f')} s)"]
    if str(info.get("reparam", "")).startswith("non-centred"):
        lines.append(f"  reparam    {info['reparam']}")
    if "mode_search" in info:
        lines.append(f"  modes      {info['mode_search']}")
    for line in info.get("vi", []):
        lines.append(f"  VI         {line}")
    if info.get("first_check"):
        lines.append(f"  1st check  failed: {info['first_check']}")
    if "khat" in info:
        lines.append(f"  checks     PSIS k-hat {_num(info['khat'])}, importance ESS "
                     f"{_num(info.get('ess'), '.0f')}"
                     + (f", shares of the fits {[round(s, 3) for s in info['fit_shares']]}"
                        if info.get("fit_shares") else ""))
    for missed in info.get("missed_mass", []) or []:
        lines.append(f"  MISSED     {missed}")
    if info.get("route") == "nuts":
        lines.append(f"  NUTS       kernel {info.get('kernel')}: {info.get('kernel_reason')}")
        lines.append(f"             R-hat max {_num(info.get('rhat_max'), '.3f')}, ESS bulk min "
                     f"{_num(info.get('ess_bulk_min'), '.0f')}, tail min "
                     f"{_num(info.get('ess_tail_min'), '.0f')}, divergences "
                     f"{info.get('num_divergences')}")
    if timings:
        lines.append("  time       " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()
                                                  if k != "total"))
    if not info.get("checks_passed") and "route" in info:
        advice = ("VI failed the checks and route='vi' kept its draws: do not trust them"
                  if info["route"] == "vi" else
                  "the chains did not pass R-hat < 1.01 / ESS / no-divergence: run longer "
                  "(num_draws, warmup) or reparameterise the model")
        lines.append(f"  advice     {advice}")
    return "\n".join(lines)
