"""Pure maths of the version comparison: intervals, a homogeneity test, a verdict.

Differences are candidate minus baseline. The interval for a difference of two
independent proportions is Newcombe's hybrid score interval (method 10 of
Newcombe 1998), built from the two Wilson intervals: for d = p1 - p2,
[d - sqrt((p1 - l1)^2 + (u2 - p2)^2), d + sqrt((u1 - p1)^2 + (p2 - l2)^2)].
It keeps its coverage near 95% for small counts and proportions near 0 or 1,
where the Wald interval does not (statsmodels' `confint_proportions_2indep(...,
method="newcomb")` is the same interval; tests/monitors/test_compare.py
checks it to 1e-9).

The verdict is a non-inferiority decision with margin m (accuracy) or e (error
rate), so that two equal versions almost never read `worse`:
  accuracy:   worse if the whole interval lies below -m; not worse if it lies above -m;
  error rate: worse if the whole interval lies above +e; not worse if it lies below +e;
  else (the interval straddles the margin) that metric cannot tell yet.
A candidate is `worse` if any metric says worse, `not_worse` if accuracy and
error rate both say not worse, and `inconclusive` otherwise, with the reason.
For equal versions a `worse` needs the 95% interval to miss the truth by more
than the margin on one side: far below 2.5% per window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from scipy.special import chdtrc

from modelmon.monitors.stats_classification import wilson_interval

Verdict = Literal["worse", "not_worse", "inconclusive"]


def newcombe_interval(c1: int, n1: int, c2: int, n2: int) -> tuple[float, float] | None:
    """95% interval of p1 - p2 (p = c / n); None if either n is 0."""
    w1, w2 = wilson_interval(c1, n1), wilson_interval(c2, n2)
    if w1 is None or w2 is None:
        return None
    p1, p2 = c1 / n1, c2 / n2
    d = p1 - p2
    lower = d - math.sqrt((p1 - w1[0]) ** 2 + (w2[1] - p2) ** 2)
    upper = d + math.sqrt((w1[1] - p1) ** 2 + (p2 - w2[0]) ** 2)
    return lower, upper


def chi2_homogeneity(a: Mapping[str, int], b: Mapping[str, int]) -> tuple[float, float, int] | None:
    """Pearson's chi-square test that two count vectors share one distribution
    (the 2 x K contingency table, classes with a zero total dropped, no
    continuity correction: scipy's `chi2_contingency(table, correction=False)`).
    (statistic, p-value, degrees of freedom); None with fewer than two classes."""
    classes = sorted(k for k in set(a) | set(b) if a.get(k, 0) + b.get(k, 0) > 0)
    na, nb = sum(a.get(k, 0) for k in classes), sum(b.get(k, 0) for k in classes)
    if len(classes) < 2 or na == 0 or nb == 0:
        return None
    n = na + nb
    stat = 0.0
    for k in classes:
        col = a.get(k, 0) + b.get(k, 0)
        for row, total in ((a, na), (b, nb)):
            e = total * col / n
            stat += (row.get(k, 0) - e) ** 2 / e
    dof = len(classes) - 1
    return stat, float(chdtrc(dof, stat)), dof


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    reason: str  # a short code, bounded (a Prometheus label)


def judge_accuracy(interval: tuple[float, float] | None, margin: float) -> Verdict:
    if interval is None:
        return "inconclusive"
    lo, hi = interval
    if hi < -margin:
        return "worse"
    if lo > -margin:
        return "not_worse"
    return "inconclusive"


def judge_errors(interval: tuple[float, float] | None, margin: float) -> Verdict:
    if interval is None:
        return "inconclusive"
    lo, hi = interval
    if lo > margin:
        return "worse"
    if hi < margin:
        return "not_worse"
    return "inconclusive"


def verdict(accuracy: Verdict, accuracy_reason: str, errors: Verdict) -> Judgement:
    """Combine the two decisions (see the module docstring).

    `accuracy_reason` says why accuracy is inconclusive when it is not judged
    at all (too few labels, labels still maturing).
    """
    if accuracy == "worse":
        return Judgement("worse", "accuracy_lower")
    if errors == "worse":
        return Judgement("worse", "error_rate_higher")
    if accuracy == "not_worse" and errors == "not_worse":
        return Judgement("not_worse", "within_margins")
    if accuracy != "not_worse":
        return Judgement("inconclusive", accuracy_reason)
    return Judgement("inconclusive", "error_rate_undecided")
