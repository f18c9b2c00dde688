"""Engines for the store, with the SQLite settings a concurrent writer/reader needs.

Also how the commands talk about a store they cannot use: a misspelled URL or an
unreachable server is an ordinary fault, so it is one line naming the URL (password
masked) and what to check, and the long-running commands wait for the store with
backoff (`wait_for_database`) instead of crashing at start-up.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)
T = TypeVar("T")

URL_HINT = "check database.url / MODELMON_DATABASE_URL"
REACH_HINT = f"{URL_HINT}, that the server is running and reachable"
#: Errors that mean "cannot connect (now)", as opposed to a bug or a bad statement.
UNREACHABLE = (OperationalError, InterfaceError)


def effective_url(url: str | URL) -> URL:
    """The URL an engine is made for: plain postgresql:// means psycopg 3, the driver we ship."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        # Keep the URL object: str(URL) masks the password.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str, echo: bool = False, pool_size: int = 5) -> Engine:
    """An engine for `url`; SQLite gets WAL so monitors can read while ingest writes."""
    parsed = effective_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(
        parsed, echo=echo, pool_size=pool_size, pool_pre_ping=True, max_overflow=pool_size
    )


def shareable(url: str) -> bool:
    """Whether another process can open the same database (not an in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return True
    database = parsed.database or ""
    return database not in ("", ":memory:") and "mode=memory" not in str(parsed)


def dialect_name(engine: Engine) -> str:
    return engine.dialect.name


def masked_url(url: str | URL) -> str:
    """`url` for a message, password replaced by ***, even when SQLAlchemy cannot parse it."""
    try:
        return effective_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(url))


def _password(url: str | URL) -> str | None:
    try:
        return make_url(url).password  # type: ignore[return-value]
    except (ArgumentError, ValueError):
        m = re.search(r"://[^:/@]*:([^@]*)@", str(url))
        return m.group(1) if m else None


def short_reason(exc: BaseException, url: str | URL | None = None) -> str:
    """The first line of the driver's message (never the password)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    reason = (lines[0] if lines else "") or type(orig).__name__
    secret = _password(url) if url is not None else None
    if secret:
        reason = reason.replace(secret, "***")
    return reason[:300]


def url_problem(url: str) -> str | None:
    """Why SQLAlchemy cannot use `url` (unparsable, unknown dialect, driver missing), or None."""
    try:
        effective_url(url).get_dialect().import_dbapi()
    except ArgumentError as exc:
        reason = short_reason(exc, url)
    except ImportError as exc:
        reason = f"its driver is not installed ({exc})"
    else:
        return None
    return (f"database.url {masked_url(url)} is not a database URL modelmon can use: {reason}; "
            f"{URL_HINT} (e.g. sqlite:///modelmon.db or postgresql://user:password@host/db)")


def _probe_engine(url: str) -> Engine:
    """A one-connection engine that gives up within seconds (a firewalled host would
    otherwise hold the error message for the OS's TCP timeout)."""
    parsed = effective_url(url)
    backend = parsed.get_backend_name()
    args = {"postgresql": {"connect_timeout": 10}, "sqlite": {"timeout": 5}}.get(backend, {})
    return create_engine(parsed, connect_args=args, poolclass=NullPool)


def database_error_message(exc: BaseException, url: str) -> str | None:
    """One line for an ordinary database fault a command hit, or None for anything else
    (a bug keeps its traceback)."""
    if isinstance(exc, ArgumentError | ImportError):
        return url_problem(url)
    if not isinstance(exc, UNREACHABLE):
        return None
    try:  # a connection-level failure, or a statement that failed on a working connection?
        probe = _probe_engine(url)
        try:
            with probe.connect():
                pass
        finally:
            probe.dispose()
    except UNREACHABLE as probe_exc:
        reason = short_reason(probe_exc, url)
        return f"cannot reach the database at {masked_url(url)}: {reason}; {REACH_HINT}"
    reason = short_reason(exc, url)
    if re.search(r"no such table|relation .* does not exist|undefined ?table", reason, re.I):
        return (f"the database at {masked_url(url)} has no modelmon tables ({reason}); "
                "run `modelmon db upgrade` first")
    return None


def wait_for_database(
    attempt: Callable[[], T], url: str | URL, stop: threading.Event,
    initial: float = 1.0, maximum: float = 30.0,
) -> T | None:
    """`attempt()` until it gets through, waiting `initial` s doubling to `maximum` s after each
    unreachable-store failure with a log line saying so; None if `stop` is set meanwhile.

    For start-up: a store that comes up after modelmon (compose, a restarted server) is
    normal, and crash-looping would only hide the cause under restarts."""
    delay = initial
    while not stop.is_set():
        try:
            return attempt()
        except UNREACHABLE as exc:
            log.warning("database unreachable at %s (%s), retrying in %g s; %s",
                        masked_url(url), short_reason(exc, url), delay, REACH_HINT)
        if stop.wait(delay):
            break
        delay = min(delay * 2, maximum)
    return None
