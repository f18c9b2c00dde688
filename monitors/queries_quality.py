"""What the store hands the quality families (accuracy, proxies, fairness):
small sums read from the rollups (`modelmon.monitors.buckets`), never rows."""

from __future__ import annotations

from dataclasses import dataclass

from modelmon.monitors.stats_classification import CalibrationBin
from modelmon.store.rollups import MISSING_SLICE, OTHER_SLICE


@dataclass(frozen=True, slots=True)
class ConfusionCounts:
    """{(predicted, label): n}; label None for predictions still unlabelled."""

    cells: dict[tuple[str, str | None], int]

    @property
    def total(self) -> int:
        return sum(self.cells.values())

    @property
    def labelled(self) -> int:
        return sum(n for (_, label), n in self.cells.items() if label is not None)

    def labelled_cells(self) -> dict[tuple[str, str], int]:
        return {(p, lab): n for (p, lab), n in self.cells.items() if lab is not None}


@dataclass(frozen=True, slots=True)
class ProxySums:
    total: int  # predictions in the window
    labelled: int
    n_max: int  # rows with a top-class probability
    sum_max: float
    low: int  # rows with score_max < confidence_threshold
    n_entropy: int
    sum_entropy: float
    n_conf: int  # rows with a per-row confidence (CBPE estimate)
    sum_conf: float
    labelled_conf: int  # labelled rows with a confidence
    labelled_sum_conf: float
    labelled_correct: int  # ... of which predicted right
    bins: list[CalibrationBin]  # over labelled rows with a confidence


@dataclass(frozen=True, slots=True)
class SliceCounts:
    """What fairness needs of one slice (or of the whole window)."""

    n: int = 0
    selected: int = 0  # predicted positive
    labelled: int = 0
    correct: int = 0
    positives: int = 0  # labelled positive
    tp: int = 0
    negatives: int = 0  # labelled, not positive
    fp: int = 0

    def __sub__(self, other: SliceCounts) -> SliceCounts:
        return SliceCounts(*(a - b for a, b in zip(_astuple(self), _astuple(other), strict=True)))

    def __add__(self, other: SliceCounts) -> SliceCounts:
        return SliceCounts(*(a + b for a, b in zip(_astuple(self), _astuple(other), strict=True)))


def _astuple(s: SliceCounts) -> tuple[int, ...]:
    return (s.n, s.selected, s.labelled, s.correct, s.positives, s.tp, s.negatives, s.fp)


__all__ = ["MISSING_SLICE", "OTHER_SLICE", "ConfusionCounts", "ProxySums", "SliceCounts"]
