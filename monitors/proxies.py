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

from typing import Any

from sqlalchemy import Connection

from modelmon.config import ResolvedModel
from modelmon.monitors.accuracy import labelled_status
from modelmon.monitors.base import MetricRow, Status, WindowedRow, gated
from modelmon.monitors.buckets import (
    all_versions,
    class_cells,
    versioned,
    versions_per_window,
    window_sums,
)
from modelmon.monitors.queries_quality import ProxySums
from modelmon.monitors.stats_classification import (
    CalibrationBin,
    expected_calibration_error,
    ratio,
)
from modelmon.monitors.windows import current_windows, pass_windows
from modelmon.store.tables import rollup_calibration, rollup_requests


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


def sums_from(
    requests: list[Any] | None, labelled: int, bins: dict[tuple[Any, ...], list[Any]]
) -> ProxySums:
    """The window's proxy sums from its rollups (status-ok predictions)."""
    n, errors, _, n_max, sum_max, low, n_ent, sum_ent, n_conf, sum_conf, _ = requests or [0] * 11
    cal = [CalibrationBin(int(b), int(c[0]), float(c[1]), int(c[2])) for (b,), c in sorted(bins.items())]
    return ProxySums(
        total=int(n - errors), labelled=labelled, n_max=int(n_max), sum_max=float(sum_max), low=int(low),
        n_entropy=int(n_ent), sum_entropy=float(sum_ent), n_conf=int(n_conf), sum_conf=float(sum_conf),
        labelled_conf=sum(b.count for b in cal), labelled_sum_conf=sum(b.confidence_sum for b in cal),
        labelled_correct=sum(b.correct for b in cal), bins=[b for b in cal if b.count],
    )


def collect(conn: Connection, model: ResolvedModel, now: float) -> list[WindowedRow]:
    windows = current_windows(model, now)
    versions = versions_per_window(conn, model, windows, now)
    requests = window_sums(conn, rollup_requests, model, windows, (), now)
    cells = class_cells(conn, model, pass_windows(model, now), now)  # shared with accuracy and shift
    calibration = window_sums(conn, rollup_calibration, model, windows, ("bin",), now)
    out: list[WindowedRow] = []
    for i, w in enumerate(windows):
        req = all_versions(requests[i], 0)
        cal = all_versions(calibration[i], 1)
        for v in versions[i]:
            labelled = sum(n for (_, lab), n in cells[i].get(v, {}).items() if lab is not None)
            s = sums_from(req.get(v, {}).get(()), labelled, cal.get(v, {}))
            out += [WindowedRow(w, row) for row in versioned(compute(s, model), v)]
    return out
