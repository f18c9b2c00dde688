"""Accuracy proxies: what the scores say before any label arrives.

Mean top-class confidence, mean entropy, the share of low-confidence
predictions, and a CBPE-style estimated accuracy (the mean per-row probability
that the prediction is right). Once labels arrive, the same window also
reports the gap between estimated and realised accuracy on its labelled rows
and the expected calibration error of that per-row confidence. All of it is
keyed by class *name* (never by position in a sorted list of classes), so
string labels whose sort order differs from the score order cannot be
mismatched (NannyML issue #346).
"""

from __future__ import annotations

from sqlalchemy import Connection

from modelmon.config import ResolvedModel
from modelmon.monitors.accuracy import labelled_status
from modelmon.monitors.aggregates import tick_groups
from modelmon.monitors.base import MetricRow, Status, WindowedRow, gated
from modelmon.monitors.queries_quality import ProxySums, proxy_sums_from
from modelmon.monitors.stats_classification import expected_calibration_error, ratio
from modelmon.monitors.windows import current_windows


def _row(metric: str, value: float | None, n: int, status: Status) -> MetricRow:
    return MetricRow(metric, value if status in ("ok", "maturing") else None, n, status)


def compute(s: ProxySums, model: ResolvedModel) -> list[MetricRow]:
    """Pure: the window's sums -> metric rows."""
    rows = []
    for metric, num, n in (
        ("mean_confidence_ratio", s.sum_max, s.n_max),
        ("mean_entropy_nats", s.sum_entropy, s.n_entropy),
        ("low_confidence_ratio", float(s.low), s.n_max),
        ("estimated_accuracy_ratio", s.sum_conf, s.n_conf),
    ):
        value, status = gated(ratio(num, n), n, model.min_samples)
        rows.append(_row(metric, value, n, status))

    # Labelled rows of the same window: gated on labels, maturing on coverage.
    n = s.labelled_conf
    status = labelled_status(n, ratio(s.labelled, s.total), model)
    gap = None
    if n:
        gap = (s.labelled_sum_conf - s.labelled_correct) / n  # estimated - realised
    ece, _ = expected_calibration_error(s.bins)
    rows.append(_row("estimated_accuracy_gap_ratio", gap, n, status))
    rows.append(_row("expected_calibration_error_ratio", ece, n, status))
    return rows


def collect(conn: Connection, model: ResolvedModel, now: float) -> list[WindowedRow]:
    groups = tick_groups(conn, model, now)  # shared with shift and accuracy
    return [
        WindowedRow(w, row)
        for w in current_windows(model, now)
        for row in compute(proxy_sums_from(groups[w]), model)
    ]
