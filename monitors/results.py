"""Writing monitor results and reading the latest of each monitor back.

Two tables, two purposes. `monitor_latest` holds each job's latest
successful pass and is replaced every tick (delete the job's rows, insert
the new ones): it is what /metrics, the API and the demo read, so their cost
does not grow with history. `monitor_results` is the history: a job's pass
is appended to it only every `monitors.history_interval` (tracked in
`monitor_runs.last_history`), which keeps the table a bounded, thinned-out
record that retention trims by `computed_at`.

Both writes happen in the scheduler's transaction together with the job's
`monitor_runs` row (created with NULL times when the job is first queued), so a job that fails leaves its last good pass in
`monitor_latest` (its staleness is visible in `runs`).
"""

from __future__ import annotations

import json
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


_COLUMNS = (
    "model", "model_version", "monitor", "metric", "window", "slice", "labels", "window_start",
    "window_end", "value", "sample_count", "status", "computed_at",
)
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_SQL: dict[tuple[str, str], str] = {}


def _records(model: str, monitor: str, rows: Iterable[WindowedRow], computed_at: float) -> list[tuple[Any, ...]]:
    """Rows in _COLUMNS order, labels as JSON text."""
    at = float(computed_at)
    return [
        (
            model, wr.row.model_version, monitor, wr.row.metric, wr.window.name, wr.row.slice_key,
            _JSON.encode(wr.row.labels), float(wr.window.start), float(wr.window.end),
            _finite(wr.row.value), int(wr.row.sample_count), wr.row.status, at,
        )
        for wr in rows
    ]


def _insert(conn: sa.Connection, table: sa.Table, records: list[tuple[Any, ...]]) -> None:
    """Plain INSERT of many rows, built once per table: the per-row parameter
    processing of an ORM-style executemany cost more than the database (a pass
    writes a few hundred rows per job)."""
    if not records:
        return
    dialect = conn.dialect.name
    sql = _SQL.get((dialect, table.name))
    if sql is None:
        q = conn.dialect.identifier_preparer.quote
        names = ", ".join(q(c) for c in _COLUMNS)
        if dialect == "postgresql":
            casts = {"labels": "jsonb", "window_start": "float8", "window_end": "float8", "value": "float8",
                     "sample_count": "int8", "computed_at": "float8"}
            select = ", ".join(
                f"(r->>{i})::{casts[c]}" if c in casts and c != "labels" else
                (f"(r->>{i})::jsonb" if c == "labels" else f"r->>{i}")
                for i, c in enumerate(_COLUMNS)
            )
            sql = f"INSERT INTO {q(table.name)} ({names}) SELECT {select} FROM jsonb_array_elements(%s::jsonb) AS r"
        else:
            sql = f"INSERT INTO {q(table.name)} ({names}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
        _SQL[(dialect, table.name)] = sql
    if dialect == "postgresql":
        # JSON has no infinities; as text, PostgreSQL's float8 reads them.
        at = _COLUMNS.index("value")
        records = [r if r[at] is None or math.isfinite(r[at]) else (*r[:at], str(r[at]).replace("inf", "Infinity"), *r[at + 1:])
                   for r in records]
        conn.exec_driver_sql(sql, (_JSON.encode(records),))
    else:
        conn.exec_driver_sql(sql, records)


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
    _insert(conn, monitor_latest, records)
    last = conn.execute(sa.select(monitor_runs.c.last_history).where(monitor_runs.c.job == job)).scalar()
    if history_due(last, computed_at, history_interval):
        _insert(conn, monitor_results, records)
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


def ensure_runs(conn: sa.Connection, jobs: Iterable[tuple[str, str, str]]) -> None:
    """Create the bookkeeping row of each (job, monitor, model) that has none.

    A new row has every time NULL (never attempted); an existing one is left
    alone. The scheduler calls this when it queues a job, so a job that never
    gets to run still has a row for the exporter and the staleness alert.
    """
    rows = [{"job": j, "monitor": m, "model": model} for j, m, model in jobs]
    for i in range(0, len(rows), 500):
        stmt = _upsert(conn)(monitor_runs).values(rows[i : i + 500])
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["job"]))


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
