"""Pure maths of the SLO monitors.

An SLO with objective o allows a bad fraction of 1 - o (the error budget).
burn rate = (bad / total) / (1 - o): 1 spends the budget exactly over the
SLO period, 14.4 spends 2% of a 30-day budget in one hour.
budget remaining = 1 - (bad / total) / (1 - o) over the SLO period: 1 = untouched,
0 = spent, negative = overspent (kept, so "how far over" stays visible).
"""

from __future__ import annotations

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99)


def quantile_label(q: float) -> str:
    return f"{q:g}"


def ratio(part: int, whole: int) -> float | None:
    return None if whole <= 0 else part / whole


def burn_rate(bad: int, total: int, objective: float) -> float | None:
    r = ratio(bad, total)
    return None if r is None else r / (1.0 - objective)


def budget_remaining(bad: int, total: int, objective: float) -> float | None:
    b = burn_rate(bad, total, objective)
    return None if b is None else 1.0 - b
