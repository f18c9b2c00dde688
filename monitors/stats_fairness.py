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
Only slices with enough samples for the rate in question enter a gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelmon.monitors.stats_classification import ratio


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
