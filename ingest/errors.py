"""Which store errors retrying cures: a lost connection is not a batch too large.

psycopg raises OperationalError both for a lost connection and for a limit
the batch exceeds (SQLSTATE 54000: a JSONB parameter over 256 MB); treating
both as an outage retried the same batch forever. The SQLSTATE decides.
"""

from __future__ import annotations

import enum
import sqlite3

import sqlalchemy as sa


class Failure(enum.Enum):
    """What a failed write means, and so what the writer does next."""

    CONNECTION = "connection"  # the store is unreachable: retry the same batch
    RETRY = "retry"  # reachable, but cannot take it now (locks, disk, schema): retry
    SPLIT = "split"  # too much at once (timeout, memory): halves; a single event is retried
    REJECT = "reject"  # refused (a limit, the data): halves; a single event is dead-lettered


class StoreProcessError(Exception):
    """A write that failed in the store process (`modelmon.ingest.store_process`).

    The child classified its own exception (the driver's error does not cross the
    pipe); this carries that verdict and the error's first line, so the writer's
    retry / split / reject logic decides as if the write had failed in-thread.
    """

    def __init__(self, failure: Failure, text: str) -> None:
        super().__init__(text)
        self.failure = failure


def short_text(exc: BaseException) -> str:
    """The first line of an error (the driver's own message when there is one), at most 300 chars."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# PostgreSQL SQLSTATEs (exact codes first, then their two-character class).
# Not listed: REJECT, as for any error that is not about the connection.
_SQLSTATE: dict[str, Failure] = {
    "08": Failure.CONNECTION,  # connection exception
    "57P01": Failure.CONNECTION,  # admin shutdown
    "57P02": Failure.CONNECTION,  # crash shutdown
    "57P03": Failure.CONNECTION,  # cannot connect now
    "57P04": Failure.CONNECTION,  # database dropped
    "57P05": Failure.CONNECTION,  # idle session timeout
    "53300": Failure.CONNECTION,  # too many connections
    "57014": Failure.SPLIT,  # query canceled (statement_timeout): smaller parts finish
    "53200": Failure.SPLIT,  # out of memory
    "53400": Failure.REJECT,  # configuration limit exceeded (temp_file_limit): parts fit
    "54": Failure.REJECT,  # program limit exceeded (a JSONB value over 256 MB, ...)
    "53": Failure.RETRY,  # insufficient resources (disk full): never dead-letter for that
    "40": Failure.RETRY,  # serialization failure, deadlock
    "55": Failure.RETRY,  # lock not available, object in use
    "42": Failure.RETRY,  # undefined table, permission denied: the schema, not the data
    "3D": Failure.RETRY,  # invalid catalog name
    "3F": Failure.RETRY,  # invalid schema name
    "28": Failure.RETRY,  # invalid authorization
    "25": Failure.RETRY,  # invalid transaction state (read-only: a standby after failover)
    "58": Failure.RETRY,  # system error (I/O)
    "F0": Failure.RETRY,  # configuration file error
    "XX": Failure.RETRY,  # internal error, data corrupted
}

# SQLite result codes (sqlite3 error names, Python >= 3.11): the file cannot be
# used right now, like a lost connection; and errors about the schema.
_SQLITE_CONNECTION = {
    "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PROTOCOL",
    "SQLITE_NOTADB",
}
_SQLITE_RETRY = {"SQLITE_FULL", "SQLITE_NOMEM", "SQLITE_READONLY", "SQLITE_CORRUPT"}
_SQLITE_MESSAGES = (  # when the error name is missing
    ("database is locked", Failure.CONNECTION),
    ("database table is locked", Failure.CONNECTION),
    ("unable to open", Failure.CONNECTION),
    ("disk i/o error", Failure.CONNECTION),
    ("no such table", Failure.RETRY),
    ("no such column", Failure.RETRY),
    ("database or disk is full", Failure.RETRY),
    ("readonly database", Failure.RETRY),
)


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a PostgreSQL error (psycopg 3 or 2), if the server sent one."""
    orig = getattr(exc, "orig", exc)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def classify(exc: BaseException) -> Failure:
    """Tell a lost connection from an error that retrying the same batch cannot cure.

    psycopg raises OperationalError both for a lost connection and for limits
    (SQLSTATE 54000: a JSONB parameter over 256 MB): the SQLSTATE decides.
    """
    if isinstance(exc, StoreProcessError):
        return exc.failure  # classified in the store process, where the error happened
    code = sqlstate_of(exc)
    if code is not None:
        return _SQLSTATE.get(code) or _SQLSTATE.get(code[:2]) or Failure.REJECT
    orig = getattr(exc, "orig", None)
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return Failure.CONNECTION
    if isinstance(exc, OSError | sa.exc.DisconnectionError) or isinstance(orig, OSError):
        return Failure.CONNECTION
    if isinstance(orig, sqlite3.Error):
        return _classify_sqlite(orig)
    if isinstance(exc, sa.exc.InterfaceError | sa.exc.OperationalError):
        # No SQLSTATE: the server never answered (refused, closed, timed out).
        return Failure.CONNECTION
    return Failure.REJECT


def _classify_sqlite(err: sqlite3.Error) -> Failure:
    name = getattr(err, "sqlite_errorname", None) or ""
    base = "_".join(name.split("_")[:2])  # SQLITE_BUSY_SNAPSHOT -> SQLITE_BUSY
    if base in _SQLITE_CONNECTION:
        return Failure.CONNECTION
    if base in _SQLITE_RETRY:
        return Failure.RETRY
    text = str(err).lower()
    for fragment, failure in _SQLITE_MESSAGES:
        if fragment in text:
            return failure
    if isinstance(err, sqlite3.InterfaceError):
        return Failure.CONNECTION
    return Failure.REJECT  # too many SQL variables, string or blob too big, constraints
