"""Writing monitor results and reading the latest of each monitor back.

History is kept: every pass appends its rows under one `computed_at` (the
evaluation time), so "the current value" of a series is the rows of the latest
`computed_at` per (model, monitor). `latest_results` finds those through the
small `monitor_runs` table (one row per job, holding the last successful
computed_at) and the index (model, monitor, computed_at): one index seek per
job, not a scan of the history.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from modelmon.monitors.base import WindowedRow
from modelmon.store.tables import monitor_results, monitor_runs


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def write_results(
    conn: sa.Connection, model: str, monitor: str, rows: Iterable[WindowedRow], computed_at: float
) -> int:
    """Append one pass of a family's rows, all under the same `computed_at`."""
    records: list[dict[str, Any]] = []
    for wr in rows:
        r = wr.row
        value = _finite(r.value)
        records.append(
            {
                "model": model,
                "model_version": r.model_version,
                "monitor": monitor,
                "metric": r.metric,
                "window": wr.window.name,
                "slice": r.slice_key,
                "labels": dict(r.labels),
                "window_start": float(wr.window.start),
                "window_end": float(wr.window.end),
                "value": value,
                "sample_count": int(r.sample_count),
                "status": r.status,
                "computed_at": float(computed_at),
            }
        )
    if records:
        conn.execute(monitor_results.insert(), records)
    return len(records)


def _upsert(conn: sa.Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def record_run(
    conn: sa.Connection,
    job: str,
    monitor: str,
    model: str,
    attempt: float,
    duration: float,
    error: str | None,
) -> None:
    """Upsert the job's bookkeeping row; last_success only moves on success."""
    values: dict[str, Any] = {
        "job": job,
        "monitor": monitor,
        "model": model,
        "last_attempt": attempt,
        "last_error": error,
        "last_duration_seconds": duration,
    }
    if error is None:
        values["last_success"] = attempt
    stmt = _upsert(conn)(monitor_runs).values(**values)
    update = {k: stmt.excluded[k] for k in values if k != "job"}
    conn.execute(stmt.on_conflict_do_update(index_elements=["job"], set_=update))


def runs(conn: sa.Connection) -> list[dict[str, Any]]:
    """Every job's bookkeeping row (for /readyz, the API and the exporter)."""
    rows = conn.execute(sa.select(monitor_runs).order_by(monitor_runs.c.job)).mappings()
    return [dict(r) for r in rows]


def latest_results(conn: sa.Connection, model: str | None = None) -> list[dict[str, Any]]:
    """The rows of the latest successful pass per (model, monitor).

    Each dict has the `monitor_results` columns (labels as a dict). The pass is
    found through `monitor_runs.last_success` (the scheduler writes it with
    the rows, equal to their computed_at), so a family that now returns no
    rows (e.g. slices removed from the configuration) shows none instead of
    its last non-empty pass, and a failing job keeps its last good values
    (its staleness is visible in `runs`).
    """
    r = monitor_results
    j = monitor_runs
    stmt = (
        sa.select(r)
        .join(j, sa.and_(r.c.model == j.c.model, r.c.monitor == j.c.monitor, r.c.computed_at == j.c.last_success))
        .order_by(r.c.model, r.c.monitor, r.c.metric, r.c.window, r.c.slice, r.c.model_version)
    )
    if model is not None:
        stmt = stmt.where(j.c.model == model)
    out = []
    for row in conn.execute(stmt).mappings():
        d = dict(row)
        d["labels"] = dict(d["labels"] or {})
        out.append(d)
    return out


def prune_results(conn: sa.Connection, older_than_seconds: float, now: float | None = None) -> int:
    """Delete history computed more than `older_than_seconds` ago (not scheduled by default)."""
    cutoff = (time.time() if now is None else now) - older_than_seconds
    res = conn.execute(monitor_results.delete().where(monitor_results.c.computed_at < cutoff))
    return int(res.rowcount or 0)
