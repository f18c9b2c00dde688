"""Retention: delete rows older than each table's configured age, in bounded steps.

Run by the monitor scheduler every `retention.interval` (job "retention:*").
Each run deletes at most `retention.batch_rows` rows per table, oldest
first, each table in its own short transaction, and never loops: a backlog
(the first run on an old store, a shortened retention) is worked off by the
following runs, so one run's cost, lock time and WAL volume stay bounded
whatever the backlog.

On PostgreSQL, `predictions` is partitioned by time (modelmon.store.partitions):
a run first creates the partitions ahead and drops whole partitions that end
before the cutoff, then deletes the rows left before the cutoff in the
partition it falls in. Every delete walks an index: predictions per model on
(model, ts), with the models found by a loose index scan; feedback, dead letters, conflicts and
the monitor history on their time indexes; rollups per (model, resolution)
on their primary-key prefix (model, res, bucket). Rollup rows have no id,
so they are addressed by their physical row locator (ctid / rowid).

Once no prediction older than the cutoff remains, the `retention_marks` row
of `predictions` moves to the cutoff (never back): the rebuild reads it so
that it never rebuilds buckets whose raw rows are gone. The other plain
tables get a mark the same way, for the record.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from modelmon.config import Config, format_duration
from modelmon.store.partitions import drop_partitions_before, ensure_partitions, is_partitioned
from modelmon.store.tables import (
    ROLLUP_TABLES,
    dead_letters,
    feedback,
    ingest_conflicts,
    monitor_latest,
    monitor_results,
    predictions,
    retention_marks,
)

log = logging.getLogger("modelmon.store.retention")

#: Partitions of `predictions` dropped per run at most (PostgreSQL).
MAX_PARTITION_DROPS = 4

# Plain tables: (table, time column, `retention` setting). `monitor_latest`
# shares the history's age: a job that has not succeeded for that long
# (a model no longer monitored) stops showing its last pass.
_BY_TIME: tuple[tuple[sa.Table, str, str], ...] = (
    (feedback, "ingested_at", "feedback"),
    (dead_letters, "received_at", "dead_letters"),
    (ingest_conflicts, "received_at", "conflicts"),
    (monitor_results, "computed_at", "results"),
    (monitor_latest, "computed_at", "results"),
)


def distinct_models(conn: sa.Connection, table: sa.Table) -> list[str]:
    """Distinct `model` values of a table whose index starts with `model`.

    A loose index scan (the recursive CTE of `monitors.scheduler.stored_models`):
    one index seek per model instead of a scan of the table.
    """
    col = table.c.model
    first = sa.select(sa.func.min(col).label("m")).cte(f"{table.name}_models", recursive=True)
    nxt = sa.select(sa.func.min(col)).where(col > first.c.m).scalar_subquery()
    walk = first.union_all(sa.select(nxt.label("m")).where(first.c.m.is_not(None)))
    return [m for (m,) in conn.execute(sa.select(walk.c.m).where(walk.c.m.is_not(None)))]


def advice(cfg: Config) -> list[str]:
    """Retention settings that are valid but probably not meant; [] when none."""
    r = cfg.retention
    out = []
    if r.fine_buckets < r.predictions:
        out.append(
            f"retention.fine_buckets ({format_duration(r.fine_buckets)}) is shorter than"
            f" retention.predictions ({format_duration(r.predictions)}): fine buckets are"
            " deleted while their raw rows are kept, so a rebuild recreates them"
            " and the next retention run deletes them again"
        )
    if r.coarse_buckets < r.fine_buckets:
        out.append(
            f"retention.coarse_buckets ({format_duration(r.coarse_buckets)}) is shorter than"
            f" retention.fine_buckets ({format_duration(r.fine_buckets)})"
        )
    longest = 0.0
    for name in [*cfg.models, "_defaults"]:
        m = cfg.model(name)
        longest = max([longest, *m.windows, *(s.period for s in m.slos)])
    if longest > r.coarse_buckets:
        out.append(
            f"a monitor window or SLO period ({format_duration(longest)}) is longer than"
            f" retention.coarse_buckets ({format_duration(r.coarse_buckets)}): its oldest part"
            " will have been deleted"
        )
    return out


def check(cfg: Config) -> list[str]:
    """Log `advice` as warnings (called at scheduler start-up); returns it."""
    notes = advice(cfg) if cfg.retention.enabled else []
    for note in notes:
        log.warning("%s", note)
    return notes


def _upsert(conn: sa.Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _mark(conn: sa.Connection, table: str, before: float, now: float) -> None:
    """Move the table's mark forward to `before` (never back: older rows are gone)."""
    old = conn.execute(
        sa.select(retention_marks.c.before).where(retention_marks.c.table_name == table)
    ).scalar()
    if old is not None and old >= before:
        return
    stmt = _upsert(conn)(retention_marks).values(table_name=table, before=before, updated_at=now)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["table_name"],
            set_={"before": stmt.excluded.before, "updated_at": stmt.excluded.updated_at},
        )
    )


def _delete_first(
    conn: sa.Connection, table: sa.Table, where: sa.ColumnElement[bool], order: sa.Column, n: int
) -> int:
    """Delete the first `n` rows matching `where` in `order` (an index's order).

    The rows are addressed by their physical locator: on PostgreSQL
    `ctid = ANY(ARRAY(subquery))`, which is fetched by a TID scan (an
    `id IN (subquery)` may be planned as a hash semi-join over a sequential
    scan of the whole table); on SQLite `rowid IN (subquery)`.
    """
    if n <= 0:
        return 0
    loc = sa.literal_column("ctid" if conn.dialect.name == "postgresql" else "rowid")
    first = sa.select(loc).select_from(table).where(where).order_by(order).limit(n)
    if conn.dialect.name == "postgresql":
        cond = loc == sa.any_(sa.func.array(first.scalar_subquery()))
    else:
        cond = loc.in_(first)
    return int(conn.execute(table.delete().where(cond)).rowcount or 0)


def _delete_predictions(conn: sa.Connection, model: str, cutoff: float, n: int) -> int:
    """The `n` oldest predictions of a model before the cutoff.

    PostgreSQL partitions `predictions`, where a ctid is only unique within
    one partition: rows are addressed by their key, and the outer `ts <
    cutoff` prunes the statement to the partitions that can hold them (after
    whole partitions were dropped: the one the cutoff falls in, and DEFAULT).
    """
    p = predictions.c
    where = sa.and_(p.model == model, p.ts < cutoff)
    if conn.dialect.name != "postgresql" or n <= 0:
        return _delete_first(conn, predictions, where, p.ts, n)
    first = sa.select(p.model, p.request_id, p.ts).where(where).order_by(p.ts).limit(n)
    key = sa.tuple_(p.model, p.request_id, p.ts)
    return int(conn.execute(predictions.delete().where(where, key.in_(first))).rowcount or 0)


def _predictions(engine: sa.Engine, cfg: Config, cutoff: float, budget: int, now: float) -> int:
    p = predictions.c
    deleted = 0
    with engine.begin() as conn:
        if is_partitioned(conn):  # whole partitions first: a catalogue change, not row deletes
            ensure_partitions(conn, now, cfg.retention.partition)
            deleted += drop_partitions_before(conn, cutoff, limit=MAX_PARTITION_DROPS)
        models = distinct_models(conn, predictions)
        for model in models:
            deleted += _delete_predictions(conn, model, cutoff, budget - deleted)
            if deleted >= budget:
                break
        if deleted < budget:
            left = any(
                conn.execute(sa.select(p.ts).where(p.model == m, p.ts < cutoff).limit(1)).first() is not None
                for m in models
            )
            if not left:
                _mark(conn, "predictions", cutoff, now)
    return deleted


def _by_time(engine: sa.Engine, table: sa.Table, column: str, cutoff: float, budget: int, now: float) -> int:
    col = table.c[column]
    with engine.begin() as conn:
        deleted = _delete_first(conn, table, col < cutoff, col, budget)
        if deleted < budget:
            _mark(conn, table.name, cutoff, now)
    return deleted


def _rollup(engine: sa.Engine, table: sa.Table, by_res: dict[int, float], budget: int) -> int:
    """Delete buckets that end before their resolution's cutoff, oldest first, per (model, res)."""
    c = table.c
    deleted = 0
    with engine.begin() as conn:
        for model in distinct_models(conn, table):
            for res, cutoff in by_res.items():
                # [bucket, bucket + res) lies wholly before the cutoff (an integer bound:
                # a float compared with the BIGINT column would be rounded).
                last = math.floor(cutoff) - res
                where = sa.and_(c.model == model, c.res == res, c.bucket <= last)
                deleted += _delete_first(conn, table, where, c.bucket, budget - deleted)
                if deleted >= budget:
                    return deleted
    return deleted


def cutoffs(cfg: Config, now: float) -> dict[str, float]:
    """Per `retention` setting: rows older than this go."""
    r = cfg.retention
    names = ("predictions", "feedback", "dead_letters", "conflicts", "fine_buckets", "coarse_buckets", "results")
    return {name: now - getattr(r, name) for name in names}


def run_retention(engine: sa.Engine, cfg: Config, now: float | None = None) -> dict[str, int]:
    """One bounded retention pass; table name -> rows deleted.

    Each table is its own transaction, so a failure part-way keeps what the
    earlier tables deleted; the next run simply goes on.
    """
    now = time.time() if now is None else now
    budget = cfg.retention.batch_rows
    cut = cutoffs(cfg, now)
    out = {"predictions": _predictions(engine, cfg, cut["predictions"], budget, now)}
    for table, column, setting in _BY_TIME:
        out[table.name] = _by_time(engine, table, column, cut[setting], budget, now)
    fine, coarse = int(cfg.rollups.fine), int(cfg.rollups.coarse)
    res = {fine: cut["fine_buckets"]}
    # One resolution for both (coarse == fine): keep the longer of the two ages.
    res[coarse] = min(cut["coarse_buckets"], res.get(coarse, cut["coarse_buckets"]))
    for table in ROLLUP_TABLES:
        out[table.name] = _rollup(engine, table, res, budget)
    if any(out.values()):
        log.info("retention deleted %s", ", ".join(f"{n} {t}" for t, n in out.items() if n))
    return out
