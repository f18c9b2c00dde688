"""PostgreSQL batch writes through COPY into a per-session staging table.

COPY streams a whole batch to the server in one command that psycopg encodes in
C: no statement with thousands of placeholders to parse, no JSON document of
the whole batch for the server to unpack. The rows land in a temporary table of
the session (`CREATE TEMP TABLE IF NOT EXISTS ... ON COMMIT DELETE ROWS`),
created on first use and emptied by every commit, so a batch costs no catalog
changes and a rolled-back batch leaves nothing behind; then one set-based
`INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING` moves them into the
real table inside the caller's transaction.

The staging table takes its column types from the real table (`CREATE TABLE
AS ... WITH NO DATA`), so a value the real table refuses (a string too long for
its column) is refused by the COPY itself, with the same SQLSTATE. Errors are
re-raised as SQLAlchemy's (`DBAPIError.instance`) with the connection marked
invalid when it broke, so `modelmon.ingest.errors.classify` and the callers'
`except sa.exc.OperationalError` see what they would have seen from
`conn.execute`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
import sqlalchemy as sa

# JSON columns go to COPY as JSON text; msgspec encodes in C (the stdlib encoder
# cost more than the COPY itself).
_JSON = msgspec.json.Encoder()


def stage_name(table: sa.Table) -> str:
    return f"modelmon_stage_{table.name}"


@contextmanager
def _translated(conn: sa.Connection, statement: str) -> Iterator[None]:
    """psycopg errors raised on the raw connection, as SQLAlchemy would raise them."""
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.Error as exc:
        raw = conn.connection.driver_connection
        broken = conn.dialect.is_disconnect(exc, raw, None)
        if broken:
            conn.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            statement, None, exc, dbapi.Error, connection_invalidated=broken
        ) from exc


def _rows_for_copy(
    rows: Sequence[tuple[Any, ...]], json_at: Sequence[int]
) -> Iterator[tuple[Any, ...]]:
    """Rows with their JSON columns as JSON text (None stays NULL)."""
    if not json_at:
        yield from rows
        return
    for row in rows:
        out = list(row)
        for n in json_at:
            if out[n] is not None:
                out[n] = _JSON.encode(out[n]).decode()
        yield tuple(out)


def copy_and_insert(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    insert_sql: Callable[[str], str],
) -> list[tuple[Any, ...]]:
    """COPY `rows` (values for `columns`, JSON columns as Python objects) into the
    session's staging table of `table`, then run `insert_sql(staging name)` and
    return what it RETURNs."""
    quote = conn.dialect.identifier_preparer.quote
    name = stage_name(table)
    cols = ", ".join(quote(c) for c in columns)
    json_at = [n for n, c in enumerate(columns) if isinstance(table.c[c].type, sa.JSON)]
    prepare = (
        # Column types from the real table; `WHERE false` keeps the defaults and
        # constraints out (feedback's id sequence), NOT NULL is checked at the insert.
        f"CREATE TEMP TABLE IF NOT EXISTS {name} ON COMMIT DELETE ROWS AS "
        f"SELECT {cols} FROM {quote(table.name)} WITH NO DATA; "
        # Rows of an earlier batch of the same transaction (commits empty it).
        f"DELETE FROM {name}"
    )
    copy = f"COPY {name} ({cols}) FROM STDIN"
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        with _translated(conn, prepare):
            cur.execute(prepare)
        with _translated(conn, copy), cur.copy(copy) as pipe:
            for row in _rows_for_copy(rows, json_at):
                pipe.write_row(row)
        sql = insert_sql(name)
        with _translated(conn, sql):
            cur.execute(sql)
            return cur.fetchall()
