"""Writing monitor results and reading the latest of each monitor back.

Two tables, two purposes. `monitor_latest` holds each job's latest
successful pass and is replaced every tick (delete the job's rows, insert
the new ones): it is what /metrics, the API and the demo read, so their cost
does not grow with history. `monitor_results` is the history: a job's pass
is appended to it only every `monitors.history_interval` (tracked in
`monitor_runs.last_history`), which keeps the table a bounded, thinned-out
record that retention trims by `computed_at`.

Both writes happen in the scheduler's transaction together with the job's
`monitor_runs` row, so a job that fails leaves its last good pass in
`monitor_latest` (its staleness is visible in `runs`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from modelmon.monitors.base import WindowedRow
from modelmon.store.tables import monitor_latest, monitor_results, monitor_runs


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _upsert(conn: sa.Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _records(model: str, monitor: str, rows: Iterable[WindowedRow], computed_at: float) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for wr in rows:
        r = wr.row
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
                "value": _finite(r.value),
                "sample_count": int(r.sample_count),
                "status": r.status,
                "computed_at": float(computed_at),
            }
        )
    return records


def history_due(last_history: float | None, computed_at: float, history_interval: float) -> bool:
    """Whether a pass at `computed_at` goes to the history.

    Due when nothing was appended yet or the last append is at least an
    interval old; also when it is in the future (a clock set back, or an
    explicit run at an earlier time), so history cannot stall until then.
    """
    if last_history is None:
        return True
    return not 0 <= computed_at - last_history < history_interval


def write_results(
    conn: sa.Connection,
    model: str,
    monitor: str,
    rows: Iterable[WindowedRow],
    computed_at: float,
    history_interval: float = 0.0,
    job: str | None = None,
) -> int:
    """Store one pass of a family's rows, all under the same `computed_at`.

    The job's rows in `monitor_latest` are replaced (a pass with no rows
    leaves none, so e.g. slices removed from the configuration disappear).
    The pass is also appended to `monitor_results` when the job's
    `last_history` is unset or at least `history_interval` old (0: every
    pass), and `last_history` then moves to `computed_at`. `job` defaults to
    the scheduler's name "monitor:model". Returns the number of rows.
    """
    job = f"{monitor}:{model}" if job is None else job
    records = _records(model, monitor, rows, computed_at)
    latest = monitor_latest.c
    conn.execute(monitor_latest.delete().where(latest.model == model, latest.monitor == monitor))
    if records:
        conn.execute(monitor_latest.insert(), records)
    last = conn.execute(sa.select(monitor_runs.c.last_history).where(monitor_runs.c.job == job)).scalar()
    if history_due(last, computed_at, history_interval):
        if records:
            conn.execute(monitor_results.insert(), records)
        stmt = _upsert(conn)(monitor_runs).values(
            job=job, monitor=monitor, model=model, last_history=float(computed_at)
        )
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["job"], set_={"last_history": stmt.excluded.last_history})
        )
    return len(records)


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

    Read from `monitor_latest` (small: one pass per job), ordered by model,
    monitor, metric, window, slice and version. Each dict has the
    `monitor_results` columns, `id` included, with labels as a dict. A job
    that failed since keeps its last good rows there (its staleness is
    visible in `runs`); one whose pass returned no rows shows none.
    """
    r = monitor_latest
    stmt = sa.select(r).order_by(r.c.model, r.c.monitor, r.c.metric, r.c.window, r.c.slice, r.c.model_version)
    if model is not None:
        stmt = stmt.where(r.c.model == model)
    out = []
    for row in conn.execute(stmt).mappings():
        d = dict(row)
        d["labels"] = dict(d["labels"] or {})
        out.append(d)
    return out
