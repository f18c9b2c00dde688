"""Statements on the driver's own cursor for the ingest hot path, failing as SQLAlchemy would.

A batch write runs a dozen statements whose results are thousands of plain
tuples (keys RETURNed by an insert, rows found by a lookup). Through
`Connection.exec_driver_sql` every one of those rows becomes a SQLAlchemy Row
first, which costs more than the database spends on it; the driver's cursor
returns its tuples as they are. Errors are re-raised as SQLAlchemy's
(`DBAPIError.instance`), with the connection invalidated when it broke, so
`modelmon.ingest.errors.classify` and the callers' `except sa.exc.OperationalError`
see what `conn.execute` would have raised.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa


@contextmanager
def translated(conn: sa.Connection, statement: str) -> Iterator[None]:
    """Driver errors raised inside, as SQLAlchemy would raise them."""
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


def cursor(conn: sa.Connection) -> Any:
    """A new cursor of the connection's driver, inside the connection's transaction.

    SQLAlchemy begins its transaction on the first statement it runs itself; begun
    here, a caller's `conn.commit()` commits what only the driver's cursor wrote.
    """
    if not conn.in_transaction():
        conn.begin()
    return conn.connection.driver_connection.cursor()


def fetch_all(conn: sa.Connection, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one statement; every row it returns, as the driver's tuples."""
    cur = cursor(conn)
    try:
        with translated(conn, sql):
            cur.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []
    finally:
        cur.close()
