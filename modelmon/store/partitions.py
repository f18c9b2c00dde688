"""Time partitions of `predictions` on PostgreSQL.

On PostgreSQL `predictions` is partitioned by RANGE (ts) into one partition
per `retention.partition` span (7 days by default, aligned to the epoch) plus
a DEFAULT partition for anything outside the partitions that exist (clock
skew, backfills). Retention then drops whole partitions instead of deleting
rows, so removing a week of raw events costs a catalogue update. The
primary key (model, request_id, ts) includes the partition key, as
PostgreSQL requires; see modelmon.store.writes for how idempotency is kept.

A partition is created ahead of time by `ensure_partitions` (called by
`modelmon db upgrade` and by every retention run). Rows that landed in the
DEFAULT partition for that span are moved into it first: the new partition
is created as a plain table, filled from DEFAULT, then attached.
SQLite has no partitions: there retention deletes rows.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

import sqlalchemy as sa

PARENT = "predictions"
DEFAULT = "predictions_default"
_NAME = re.compile(r"^predictions_p(\d{8})$")
_BOUNDS = re.compile(r"FROM \('?([0-9.e+-]+)'?\) TO \('?([0-9.e+-]+)'?\)")


def partition_name(start: float) -> str:
    return "predictions_p" + datetime.fromtimestamp(start, UTC).strftime("%Y%m%d")


def is_partitioned(conn: sa.Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    return bool(conn.exec_driver_sql(
        "SELECT 1 FROM pg_partitioned_table pt JOIN pg_class c ON c.oid = pt.partrelid "
        "WHERE c.relname = %s AND c.relnamespace = to_regnamespace(current_schema())::oid",
        (PARENT,),
    ).first())


def partitions(conn: sa.Connection) -> list[tuple[str, float, float]]:
    """(name, start, end) of the range partitions, oldest first (DEFAULT left out)."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "WHERE p.relname = %s AND p.relnamespace = to_regnamespace(current_schema())::oid",
        (PARENT,),
    ).all()
    out = []
    for name, bound in rows:
        m = _BOUNDS.search(bound or "")
        if m:
            out.append((name, float(m.group(1)), float(m.group(2))))
    return sorted(out, key=lambda x: x[1])


def span_start(ts: float, span: float) -> float:
    return math.floor(ts / span) * span


def ensure_partitions(conn: sa.Connection, now: float, span: float, ahead: int = 2) -> list[str]:
    """Create the partitions of the current span and `ahead` spans after it
    (spans that overlap an existing partition, e.g. one made with another
    `retention.partition`, are skipped); the names created."""
    if not is_partitioned(conn):
        return []
    have = [(start, end) for _, start, end in partitions(conn)]
    created = []
    start = span_start(now, span)
    for _ in range(ahead + 1):
        end = start + span
        if not any(s < end and start < e for s, e in have):
            create_partition(conn, start, end)
            created.append(partition_name(start))
        start = end
    return created


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic autogenerate filter: the partitions are not in the metadata."""
    return not (type_ == "table" and name is not None and (name == DEFAULT or _NAME.match(name)))


def create_partition(conn: sa.Connection, start: float, end: float) -> None:
    """A new partition for [start, end), taking over DEFAULT's rows of that span."""
    name = partition_name(start)
    q = conn.dialect.identifier_preparer.quote
    conn.exec_driver_sql(f"CREATE TABLE {q(name)} (LIKE {q(PARENT)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    conn.exec_driver_sql(
        f"WITH moved AS (DELETE FROM {q(DEFAULT)} WHERE ts >= %s AND ts < %s RETURNING *) "
        f"INSERT INTO {q(name)} SELECT * FROM moved",
        (start, end),
    )
    conn.exec_driver_sql(
        f"ALTER TABLE {q(PARENT)} ATTACH PARTITION {q(name)} FOR VALUES FROM (%s) TO (%s)" % (repr(start), repr(end))
    )


def drop_partitions_before(conn: sa.Connection, cutoff: float, limit: int) -> int:
    """Drop at most `limit` partitions that end at or before `cutoff`; rows dropped."""
    q = conn.dialect.identifier_preparer.quote
    dropped = 0
    for name, _, end in partitions(conn)[:limit]:
        if end > cutoff:
            break
        n = conn.exec_driver_sql(f"SELECT count(*) FROM {q(name)}").scalar_one()
        conn.exec_driver_sql(f"ALTER TABLE {q(PARENT)} DETACH PARTITION {q(name)}")
        conn.exec_driver_sql(f"DROP TABLE {q(name)}")
        dropped += int(n)
    return dropped
