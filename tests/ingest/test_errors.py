"""Store errors classified by SQLSTATE (PostgreSQL) or result code (SQLite)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from conftest import pg_error

from modelmon.ingest.errors import Failure, classify, sqlstate_of


@pytest.mark.parametrize(("sqlstate", "failure"), [
    ("08006", Failure.CONNECTION),  # connection failure
    ("08001", Failure.CONNECTION),  # could not establish a connection
    ("57P01", Failure.CONNECTION),  # admin shutdown
    ("57P02", Failure.CONNECTION),  # crash shutdown
    ("57P03", Failure.CONNECTION),  # cannot connect now (starting up, shutting down)
    ("53300", Failure.CONNECTION),  # too many connections
    ("40001", Failure.RETRY),  # serialization failure
    ("40P01", Failure.RETRY),  # deadlock detected
    ("55P03", Failure.RETRY),  # lock not available
    ("53100", Failure.RETRY),  # disk full: never dead-letter for that
    ("42P01", Failure.RETRY),  # undefined table: the schema, not the data
    ("42501", Failure.RETRY),  # insufficient privilege
    ("25006", Failure.RETRY),  # read-only transaction (a standby after a failover)
    ("57014", Failure.SPLIT),  # statement timeout
    ("53200", Failure.SPLIT),  # out of memory
    ("54000", Failure.REJECT),  # program limit exceeded (a JSONB value over 256 MB)
    ("54001", Failure.REJECT),  # statement too complex
    ("53400", Failure.REJECT),  # configuration limit exceeded (temp_file_limit)
    ("22001", Failure.REJECT),  # value too long
    ("22P05", Failure.REJECT),  # untranslatable character
    ("23505", Failure.REJECT),  # unique violation
    ("23514", Failure.REJECT),  # check violation
    ("P0001", Failure.REJECT),  # raised by a trigger
])
def test_postgresql_errors_are_classified_by_sqlstate(sqlstate: str, failure: Failure) -> None:
    exc = pg_error(sqlstate)
    assert sqlstate_of(exc) == sqlstate
    assert classify(exc) is failure


def test_errors_without_a_sqlstate() -> None:
    # psycopg raises OperationalError without a SQLSTATE when the server never answered.
    refused = psycopg.OperationalError("connection failed: Connection refused")
    assert classify(sa.exc.OperationalError("SELECT", {}, refused)) is Failure.CONNECTION
    assert classify(sa.exc.InterfaceError("SELECT", {}, psycopg.InterfaceError("closed"))) is (
        Failure.CONNECTION)
    assert classify(ConnectionResetError()) is Failure.CONNECTION
    assert classify(sa.exc.DisconnectionError("gone")) is Failure.CONNECTION
    # Not the database: a bug in write_batch or a value it cannot handle.
    assert classify(ValueError("x")) is Failure.REJECT
    assert classify(sa.exc.DataError("INSERT", {}, ValueError("too long"))) is Failure.REJECT


def test_sqlite_locked_and_unopenable_are_connection_failures(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError) as locked:
            sqlite3.connect(path, timeout=0).execute("SELECT * FROM t")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with pytest.raises(sqlite3.OperationalError) as cannot_open:
        sqlite3.connect(tmp_path / "missing" / "s.db")
    with pytest.raises(sqlite3.OperationalError) as no_table:
        sqlite3.connect(path).execute("SELECT * FROM nope")
    with pytest.raises(sqlite3.OperationalError) as too_many:
        sqlite3.connect(path).execute("SELECT " + ",".join("?" * 40_000), (1,) * 40_000)
    wrap = lambda e: sa.exc.OperationalError("SELECT", {}, e)  # noqa: E731
    assert classify(wrap(locked.value)) is Failure.CONNECTION
    assert classify(wrap(cannot_open.value)) is Failure.CONNECTION
    assert classify(wrap(sqlite3.OperationalError("database is locked"))) is Failure.CONNECTION
    assert classify(wrap(no_table.value)) is Failure.RETRY  # the schema: wait for the migration
    assert classify(wrap(too_many.value)) is Failure.REJECT  # smaller parts fit
