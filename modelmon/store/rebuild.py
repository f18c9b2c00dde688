"""Recompute a model's rollups from its raw predictions.

Needed after a configuration change that alters what the rollups count (new
slice attributes, another positive class, confidence threshold, calibration
bins, SLO thresholds or sketch accuracy) and to backfill them after the
migration that introduced them. Work goes one chunk of coarse buckets at a
time, oldest first, each chunk in its own transaction (delete the chunk's
buckets, stream its raw rows through the same counting code as ingest,
write), so memory is bounded by a chunk's buckets and a fetch, and an
interrupted rebuild is resumed by running it again with `--since` at the
last chunk it reported. On PostgreSQL each chunk holds a SHARE lock on
`predictions`, so a concurrent ingest waits for the chunk instead of being
counted twice or lost.

Buckets older than the raw rows that retention kept are left alone: a
rebuild starts no earlier than the first whole coarse bucket after the
`predictions` retention mark.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from modelmon.store import rollups
from modelmon.store.rollups import EVENT_COLUMNS, Delta, Event, Specs
from modelmon.store.tables import ROLLUP_TABLES, predictions, retention_marks

FETCH_ROWS = 20_000


@dataclass(slots=True)
class RebuildReport:
    model: str
    start: float | None = None  # first bucket rebuilt
    end: float | None = None  # end of the last chunk rebuilt
    chunks: int = 0
    rows: int = 0
    seconds: float = 0.0


def _bounds(conn: sa.Connection, model: str) -> tuple[float | None, float | None]:
    row = conn.execute(
        sa.select(sa.func.min(predictions.c.ts), sa.func.max(predictions.c.ts)).where(
            predictions.c.model == model
        )
    ).one()
    return row[0], row[1]


def stored_models(engine: sa.Engine) -> list[str]:
    """The models with raw predictions (what `--all` and the backfill rebuild),
    found by a loose index scan on (model, ts): one seek per model."""
    from modelmon.store.retention import distinct_models

    with engine.connect() as conn:
        return sorted(distinct_models(conn, predictions))


def raw_watermark(conn: sa.Connection) -> float | None:
    """Raw predictions before this time may have been removed by retention."""
    return conn.execute(
        sa.select(retention_marks.c.before).where(retention_marks.c.table_name == "predictions")
    ).scalar()


def rebuild(
    engine: sa.Engine,
    specs: Specs,
    model: str,
    since: float | None = None,
    chunk_seconds: float | None = None,
    progress: Callable[[RebuildReport], None] | None = None,
) -> RebuildReport:
    """Rebuild `model`'s rollups from `since` (default: its first prediction) on."""
    started = time.monotonic()
    spec = specs(model)
    coarse = max(spec.resolutions)
    chunk = coarse * max(1, math.ceil((chunk_seconds or 6 * coarse) / coarse))
    report = RebuildReport(model)
    with engine.connect() as conn:
        first, last = _bounds(conn, model)
        mark = raw_watermark(conn)
    if first is None or last is None:
        return report
    start = math.floor((first if since is None else max(since, 0.0)) / coarse) * coarse
    if mark is not None and start < mark:
        start = math.ceil(mark / coarse) * coarse
    end = (math.floor(last / coarse) + 1) * coarse
    report.start = start
    t = start
    while t < end:
        with engine.begin() as conn:
            report.rows += rebuild_chunk(conn, specs, model, t, t + chunk)
        t += chunk
        report.chunks += 1
        report.end = t
        if progress is not None:
            progress(report)
    report.seconds = time.monotonic() - started
    return report


def rebuild_chunk(conn: sa.Connection, specs: Specs, model: str, start: float, end: float) -> int:
    """Replace the buckets in [start, end) (coarse-aligned) by counts of the raw rows."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE predictions IN SHARE MODE")
    for table in ROLLUP_TABLES:
        conn.execute(
            table.delete().where(table.c.model == model, table.c.bucket >= start, table.c.bucket < end)
        )
    p = predictions
    # yield_per: a server-side cursor on PostgreSQL (psycopg's default cursor
    # would load the whole chunk into memory before the first fetchmany).
    result = conn.execute(
        sa.select(*(p.c[c] for c in EVENT_COLUMNS))
        .where(p.c.model == model, p.c.ts >= start, p.c.ts < end)
        .execution_options(yield_per=FETCH_ROWS)
    )
    spec = specs(model)
    delta = Delta()
    n = 0
    while rows := result.fetchmany(FETCH_ROWS):
        events = [Event(*r) for r in rows]
        admitted = rollups.admit_slice_values(conn, specs, events)
        for ev in events:
            delta.add_prediction(ev, spec, admitted)
        n += len(events)
    result.close()
    rollups.apply(conn, delta)
    return n
