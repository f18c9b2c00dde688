"""Pure maths for the labelled-quality monitors: no database, no numpy.

The SQL side hands over small aggregates (a confusion matrix, per-bin sums,
a few order statistics); everything here works on those, so that a window of
a million predictions costs a GROUP BY, not a million Python objects.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# scipy.stats.norm.ppf(0.975); a constant so the service never imports scipy.stats
# (tests/monitors/test_accuracy_stats.py checks it against scipy).
Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval (no continuity correction); None for n == 0.

    Unlike the Wald interval it stays inside [0, 1] and keeps its width at 0/n
    and n/n, where a monitor on a good model spends most of its life.
    """
    if n <= 0:
        return None
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def ratio(num: float, den: float) -> float | None:
    return None if den == 0 else num / den


@dataclass(frozen=True, slots=True)
class ClassScores:
    """Per-class counts and rates; a rate is None where its denominator is 0."""

    cls: str
    tp: int
    fp: int
    fn: int

    @property
    def predicted(self) -> int:
        return self.tp + self.fp

    @property
    def support(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float | None:
        return ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        return ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float | None:
        # 2TP / (2TP + FP + FN): the harmonic mean of precision and recall where
        # both exist, and 0 (as in scikit-learn >= 1.3) where only one does.
        return ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)


@dataclass(frozen=True, slots=True)
class ConfusionSummary:
    labelled: int
    correct: int
    classes: list[ClassScores]  # sorted by class name

    @property
    def accuracy(self) -> float | None:
        return ratio(self.correct, self.labelled)

    @property
    def macro_f1(self) -> float | None:
        """Mean F1 over the classes seen as prediction or label (scikit-learn's default)."""
        f1s = [c.f1 for c in self.classes if c.tp + c.fp + c.fn > 0]
        return sum(f1s) / len(f1s) if f1s else None  # type: ignore[arg-type]


def summarize_confusion(
    counts: Mapping[tuple[str, str], int], extra_classes: Iterable[str] = ()
) -> ConfusionSummary:
    """Confusion matrix {(predicted, label): n} over labelled rows -> accuracy, P/R/F1."""
    tp: dict[str, int] = {}
    fp: dict[str, int] = {}
    fn: dict[str, int] = {}
    labelled = correct = 0
    for (pred, label), n in counts.items():
        if n <= 0:
            continue
        labelled += n
        if pred == label:
            correct += n
            tp[pred] = tp.get(pred, 0) + n
        else:
            fp[pred] = fp.get(pred, 0) + n
            fn[label] = fn.get(label, 0) + n
    names = sorted(set(tp) | set(fp) | set(fn) | set(extra_classes))
    classes = [ClassScores(c, tp.get(c, 0), fp.get(c, 0), fn.get(c, 0)) for c in names]
    return ConfusionSummary(labelled, correct, classes)


@dataclass(frozen=True, slots=True)
class CalibrationBin:
    index: int  # 0 .. bins-1; bin i holds confidence in [i/B, (i+1)/B), the last one [.., 1]
    count: int
    confidence_sum: float
    correct: int


def expected_calibration_error(bins: Iterable[CalibrationBin]) -> tuple[float | None, int]:
    """ECE = sum_b (n_b / N) * |accuracy_b - mean confidence_b| (Guo et al. 2017), and N."""
    rows = [b for b in bins if b.count > 0]
    total = sum(b.count for b in rows)
    if total == 0:
        return None, 0
    ece = sum(abs(b.correct - b.confidence_sum) for b in rows) / total
    return ece, total
