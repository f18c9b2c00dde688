"""Accuracy over labelled predictions: the number people get paged on.

Per trailing window (on prediction time): accuracy with a 95% Wilson interval,
per-class precision / recall / F1, macro F1, label coverage and label delay.
A window whose labels have not mostly arrived yet (coverage below
`mature_coverage`) is reported as `maturing`: its value is kept in history but
alerts do not fire on it, because early labels are often not a random sample.
Everything is read from rollups: the confusion counts exactly, the label-delay
quantiles from DDSketch bins (within `rollups.sketch_relative_accuracy` of the
exact value, see modelmon.store.sketch). Rows per window: all versions ("*")
and each of the `version_top_k` busiest versions.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from modelmon.config import ResolvedModel
from modelmon.monitors.base import MetricRow, Status, WindowedRow, gated
from modelmon.monitors.buckets import (
    all_versions,
    class_cells,
    versioned,
    versions_per_window,
    window_sums,
)
from modelmon.monitors.queries_quality import ConfusionCounts
from modelmon.monitors.stats_classification import (
    summarize_confusion,
    wilson_interval,
)
from modelmon.monitors.windows import current_windows, pass_windows
from modelmon.store import sketch
from modelmon.store.tables import rollup_sketches

DELAY_QUANTILES = (0.5, 0.95)


@dataclass(frozen=True, slots=True)
class AccuracyInputs:
    """What the store hands the pure computation for one window."""

    counts: ConfusionCounts
    delay_n: int  # labelled rows with a feedback time
    delays: dict[float, float]  # quantile -> label delay in seconds


def labelled_status(n: int, coverage: float | None, model: ResolvedModel) -> Status:
    """ok / insufficient_data / no_data on the label count, then maturing on coverage."""
    _, status = gated(0.0, n, model.min_labels)
    if status == "ok" and (coverage is None or coverage < model.mature_coverage):
        return "maturing"
    return status


def _row(metric: str, value: float | None, n: int, status: Status, **labels: str) -> MetricRow:
    return MetricRow(metric, value if status in ("ok", "maturing") else None, n, status, labels)


def compute(inputs: AccuracyInputs, model: ResolvedModel) -> list[MetricRow]:
    """Pure: confusion counts + delay order statistics -> metric rows."""
    counts = inputs.counts
    total, labelled = counts.total, counts.labelled
    coverage = labelled / total if total else None
    summary = summarize_confusion(counts.labelled_cells(), model.classes or ())
    status = labelled_status(labelled, coverage, model)

    rows = [_row("labeled_predictions", float(labelled), labelled, "ok")]
    cov_value, cov_status = gated(coverage, total, model.min_samples)
    rows.append(_row("label_coverage_ratio", cov_value, total, cov_status))

    _, delay_status = gated(0.0, inputs.delay_n, model.min_labels)
    for q in DELAY_QUANTILES:
        value = inputs.delays.get(q)
        rows.append(
            _row("label_delay_seconds", value, inputs.delay_n, delay_status, quantile=f"{q:g}")
        )

    interval = wilson_interval(summary.correct, labelled)
    rows.append(_row("accuracy_ratio", summary.accuracy, labelled, status))
    rows.append(_row("accuracy_lower_ratio", interval and interval[0], labelled, status))
    rows.append(_row("accuracy_upper_ratio", interval and interval[1], labelled, status))
    rows.append(_row("macro_f1_ratio", summary.macro_f1, labelled, status))

    for c in summary.classes:
        for metric, value, n in (
            ("precision_ratio", c.precision, c.predicted),
            ("recall_ratio", c.recall, c.support),
            ("f1_ratio", c.f1, c.tp + c.fp + c.fn),
        ):
            # Gated on the window's label count; a class with nothing to divide by has no value.
            st: Status = (
                status if value is not None or status not in ("ok", "maturing") else "no_data"
            )
            rows.append(_row(metric, value, n, st, **{"class": c.cls}))
    return rows


def collect(conn: Connection, model: ResolvedModel, now: float) -> list[WindowedRow]:
    windows = current_windows(model, now)
    versions = versions_per_window(conn, model, windows, now)
    cells = class_cells(conn, model, pass_windows(model, now), now)  # shared with shift
    sketches = window_sums(conn, rollup_sketches, model, windows, ("kind", "key"), now)
    acc = model.sketch_relative_accuracy
    out: list[WindowedRow] = []
    for i, w in enumerate(windows):
        per_cells = cells[i]
        per_sketch = all_versions(sketches[i], 2)
        for v in versions[i]:
            counts = ConfusionCounts(per_cells.get(v, {}))
            bins = {k: int(x[0]) for (kind, k), x in per_sketch.get(v, {}).items() if kind == "delay"}
            n, qs = sketch.quantiles(bins, DELAY_QUANTILES, acc)
            inputs = AccuracyInputs(counts, n, {q: x for q, x in qs.items() if x is not None})
            out += [WindowedRow(w, row) for row in versioned(compute(inputs, model), v)]
    return out
