"""Pure maths for per-slice fairness: rates per slice and gaps across slices.

Definitions follow fairlearn so that its MetricFrame and
demographic_parity_* / equalized_odds_difference give the same numbers on the
same events (tests/monitors/test_fairness*.py):
  selection rate = predicted positive / predictions (labelled or not)
  accuracy       = correct / labelled
  TPR            = predicted positive among labelled positive
  FPR            = predicted positive among labelled negative
  demographic-parity difference = max - min selection rate;  ratio = min / max
  equal-opportunity difference  = max - min TPR
  equalized-odds difference     = max(TPR gap, FPR gap)

The monitor's gaps (`*_interval`) run over every slice whose rate is defined
(floor: one prediction for the selection rate, one labelled positive for the
TPR, one of each class for equalized odds), so they equal fairlearn's
`method="between_groups"` values on the same slices. Leaving small slices out
hid real gaps; instead each gap carries a simultaneous 95% interval that is as
wide as the small slices make it, and the alert reads the interval's bound.
`difference` / `ratio_min_max` / `equalized_odds` (with a min_n) stay for the
version comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from modelmon.monitors.stats_classification import ratio, wilson_interval

ALPHA = 0.05  # the gap intervals hold for all slices at once with probability >= 95%


@dataclass(frozen=True, slots=True)
class Rate:
    successes: int
    n: int

    @property
    def value(self) -> float | None:
        return ratio(self.successes, self.n)


@dataclass(frozen=True, slots=True)
class Gap:
    value: float | None  # None: fewer than two eligible slices, or undefined (0/0)
    slices: int  # eligible slices
    n: int  # samples behind the eligible slices' rates


def _spread(rates: Sequence[Rate], min_n: int) -> tuple[list[float], int]:
    vals = [r.value for r in rates if r.n >= min_n and r.value is not None]
    return vals, sum(r.n for r in rates if r.n >= min_n)  # type: ignore[misc]


def difference(rates: Sequence[Rate], min_n: int) -> Gap:
    """max - min of the rates whose denominator reaches min_n."""
    vals, n = _spread(rates, min_n)
    if len(vals) < 2:
        return Gap(None, len(vals), n)
    return Gap(max(vals) - min(vals), len(vals), n)


def ratio_min_max(rates: Sequence[Rate], min_n: int) -> Gap:
    """min / max (disparate impact; the four-fifths rule flags < 0.8)."""
    vals, n = _spread(rates, min_n)
    if len(vals) < 2 or max(vals) == 0:
        return Gap(None, len(vals), n)
    return Gap(min(vals) / max(vals), len(vals), n)


def equalized_odds(tpr: Sequence[Rate], fpr: Sequence[Rate], min_n: int) -> Gap:
    """max(TPR gap, FPR gap) over the slices where both rates have min_n samples."""
    both = [(t, f) for t, f in zip(tpr, fpr, strict=True) if t.n >= min_n and f.n >= min_n]
    if len(both) < 2:
        return Gap(None, len(both), sum(t.n + f.n for t, f in both))
    t_gap = difference([t for t, _ in both], min_n)
    f_gap = difference([f for _, f in both], min_n)
    assert t_gap.value is not None and f_gap.value is not None
    return Gap(max(t_gap.value, f_gap.value), len(both), t_gap.n + f_gap.n)


@dataclass(frozen=True, slots=True)
class GapInterval:
    value: float | None  # point estimate; None: fewer than two slices, or 0/0
    lower: float | None
    upper: float | None
    slices: int  # slices with a defined rate (denominator >= 1)
    n: int  # samples behind those slices' rates


def bonferroni_z(k: int, alpha: float = ALPHA) -> float:
    """Two-sided normal quantile at level 1 - alpha/k: k intervals that each miss
    with probability alpha/k all hold together with probability >= 1 - alpha."""
    return NormalDist().inv_cdf(1.0 - alpha / (2 * max(k, 1)))


def simultaneous_wilson(
    rates: Sequence[Rate], k: int, alpha: float = ALPHA
) -> list[tuple[float, float]]:
    """Wilson interval of each rate (all n >= 1) at the Bonferroni level for k intervals."""
    z = bonferroni_z(k, alpha)
    return [wilson_interval(r.successes, r.n, z) or (0.0, 1.0) for r in rates]


def _defined(rates: Sequence[Rate]) -> list[Rate]:
    return [r for r in rates if r.n >= 1]


def _spread_bounds(bounds: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Bounds of max(p) - min(p) when every p_i lies in its [lo_i, hi_i]: the true
    max lies in [max lo, max hi] and the true min in [min lo, min hi]."""
    lo = [b[0] for b in bounds]
    hi = [b[1] for b in bounds]
    return max(0.0, max(lo) - min(hi)), max(hi) - min(lo)


def difference_interval(rates: Sequence[Rate], alpha: float = ALPHA) -> GapInterval:
    """max - min over every slice with n >= 1, with a simultaneous (1 - alpha) interval."""
    use = _defined(rates)
    n = sum(r.n for r in use)
    if len(use) < 2:
        return GapInterval(None, None, None, len(use), n)
    vals = [r.successes / r.n for r in use]
    lo, hi = _spread_bounds(simultaneous_wilson(use, len(use), alpha))
    return GapInterval(max(vals) - min(vals), lo, hi, len(use), n)


def ratio_interval(rates: Sequence[Rate], alpha: float = ALPHA) -> GapInterval:
    """min / max over every slice with n >= 1 (disparate impact), with a simultaneous
    interval: with every p_i in [lo_i, hi_i], min p / max p lies in
    [min lo / max hi, min hi / max lo], the upper end capped at 1 (and 1 when max lo = 0)."""
    use = _defined(rates)
    n = sum(r.n for r in use)
    vals = [r.successes / r.n for r in use]
    if len(use) < 2 or max(vals) == 0:
        return GapInterval(None, None, None, len(use), n)
    bounds = simultaneous_wilson(use, len(use), alpha)
    lo = [b[0] for b in bounds]
    hi = [b[1] for b in bounds]
    upper = 1.0 if max(lo) == 0 else min(1.0, min(hi) / max(lo))
    return GapInterval(min(vals) / max(vals), min(lo) / max(hi), upper, len(use), n)


def equalized_odds_interval(
    tpr: Sequence[Rate], fpr: Sequence[Rate], alpha: float = ALPHA
) -> GapInterval:
    """max(TPR gap, FPR gap) over the slices with both a labelled positive and a
    labelled negative; Bonferroni over all 2k rates, so both gaps' intervals hold
    together and their max lies between the larger lower and the larger upper bound."""
    both = [(t, f) for t, f in zip(tpr, fpr, strict=True) if t.n >= 1 and f.n >= 1]
    n = sum(t.n + f.n for t, f in both)
    if len(both) < 2:
        return GapInterval(None, None, None, len(both), n)
    k = 2 * len(both)
    t_b = simultaneous_wilson([t for t, _ in both], k, alpha)
    f_b = simultaneous_wilson([f for _, f in both], k, alpha)
    gaps = [
        max(v) - min(v)
        for v in ([t.successes / t.n for t, _ in both], [f.successes / f.n for _, f in both])
    ]
    (tl, th), (fl, fh) = _spread_bounds(t_b), _spread_bounds(f_b)
    return GapInterval(max(gaps), max(tl, fl), max(th, fh), len(both), n)
