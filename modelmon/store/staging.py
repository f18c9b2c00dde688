"""PostgreSQL batch writes through COPY into a per-session staging table.

COPY streams a whole batch to the server in one command: no statement with
thousands of placeholders to parse, no JSON document of the whole batch for the
server to unpack. The rows land in a temporary table of the session (`CREATE
TEMP TABLE IF NOT EXISTS ... ON COMMIT DELETE ROWS`), created on first use and
emptied by every commit, so a batch costs no catalog changes and a rolled-back
batch leaves nothing behind; then one set-based `INSERT ... SELECT ... ON
CONFLICT DO NOTHING RETURNING` moves them into the real table inside the
caller's transaction.

Rows arrive as columns (`modelmon.store.columns`) and are zipped into rows in C;
psycopg's `write_row` formats each row in C and streams the data while the
server parses it. (Building the whole COPY text in bulk with str.join and
str.replace was measured slower: the float reprs dominate either way, and one
big write loses the overlap with the server.)

The staging table takes its column types from the real table (`CREATE TABLE
AS ... WITH NO DATA`), so a value the real table refuses (a string too long for
its column) is refused by the COPY itself, with the same SQLSTATE. Errors are
re-raised as SQLAlchemy's (`modelmon.store.driver.translated`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa

from modelmon.store.driver import cursor, translated

# JSON columns go to COPY as JSON text; msgspec encodes in C (the stdlib encoder
# cost more than the COPY itself).
_JSON = msgspec.json.Encoder()


def stage_name(table: sa.Table) -> str:
    return f"modelmon_stage_{table.name}"


def _json_column(values: Sequence[Any]) -> list[str | None]:
    """A JSON column's values as JSON text (None stays NULL)."""
    enc = _JSON.encode
    return [None if v is None else enc(v).decode() for v in values]


def copy_and_insert(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[str],
    values: Sequence[Sequence[Any]],
    insert_sql: Callable[[str], str],
) -> list[tuple[Any, ...]]:
    """COPY rows, given as one sequence of values per name in `columns` (JSON columns
    as Python objects), into the session's staging table of `table`, then run
    `insert_sql(staging name)` and return what it RETURNs."""
    quote = conn.dialect.identifier_preparer.quote
    name = stage_name(table)
    cols = ", ".join(quote(c) for c in columns)
    values = [
        _json_column(v) if isinstance(table.c[c].type, sa.JSON) else v
        for c, v in zip(columns, values, strict=True)
    ]
    prepare = (
        # Column types from the real table; `WHERE false` keeps the defaults and
        # constraints out (feedback's id sequence), NOT NULL is checked at the insert.
        f"CREATE TEMP TABLE IF NOT EXISTS {name} ON COMMIT DELETE ROWS AS "
        f"SELECT {cols} FROM {quote(table.name)} WITH NO DATA; "
        # Rows of an earlier batch of the same transaction (commits empty it).
        f"DELETE FROM {name}"
    )
    copy = f"COPY {name} ({cols}) FROM STDIN"
    with cursor(conn) as cur:
        with translated(conn, prepare):
            cur.execute(prepare)
        with translated(conn, copy), cur.copy(copy) as pipe:
            write = pipe.write_row
            for row in zip(*values, strict=True):
                write(row)
        sql = insert_sql(name)
        with translated(conn, sql):
            cur.execute(sql)
            return cur.fetchall() if cur.description is not None else []
