"""Shared fixtures: a real Kafka-protocol broker (Tansu) and a throwaway PostgreSQL 15.

Servers start lazily (only when a selected test asks for them), bind to 127.0.0.1,
and are torn down at session end even when tests fail. A missing binary fails the
test with a pointer to ``make setup``: CI must never silently skip these.
Process management lives in ``tests/servers.py``.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

_HERE = str(Path(__file__).parent)
if _HERE not in sys.path:  # lets fixture files in sub-directories `import servers` too
    sys.path.insert(0, _HERE)

import servers  # noqa: E402

T = TypeVar("T")

_SERVER_FIXTURES = {"kafka_bootstrap", "kafka_topics", "pg_server", "pg_url"}


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """Let SIGTERM (CI time-out, ``kill``) unwind through fixture teardown.

    Also hush a deprecation warning kafka-python raises on every import.
    """
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    config.addinivalue_line(
        "filterwarnings", r"ignore:(read_text|open_text) is deprecated:DeprecationWarning"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a real server as ``integration`` automatically."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or (
            params.get("db_url") == "postgresql"
        ):
            item.add_marker(pytest.mark.integration)


def _start(what: str, start: Callable[[], T]) -> T:
    """Turn set-up errors into a failure (not an error traceback, never a skip)."""
    try:
        return start()
    except (servers.MissingBinaryError, servers.ServerStartError) as exc:
        message = f"{what}: {exc}"
    pytest.fail(message, pytrace=False)  # outside `except`: no chained traceback


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``"127.0.0.1:PORT"`` of a memory-only Tansu broker shared by the session."""
    workdir = tmp_path_factory.mktemp("tansu")
    broker = _start("Kafka broker", lambda: servers.start_tansu(workdir))
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def kafka_topics(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Factory ``kafka_topics(prefix="test", partitions=1) -> name``: fresh topic per call."""
    created: list[str] = []

    def make(prefix: str = "test", partitions: int = 1) -> str:
        name = servers.new_topic_name(prefix)
        servers.create_topics(kafka_bootstrap, [name], partitions)
        created.append(name)
        return name

    yield make
    servers.delete_topics(kafka_bootstrap, created)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[servers.PostgresServer]:
    """PostgreSQL 15 on 127.0.0.1 with ``port``, ``datadir``, ``url(db)``, ``stop()``, ``start()``."""
    server = _start("PostgreSQL", servers.start_postgres)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(pg_server: servers.PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty database; dropped afterwards."""
    name = f"modelmon_{uuid.uuid4().hex[:12]}"
    pg_server.create_database(name)
    try:
        yield pg_server.url(name)
    finally:
        if not pg_server.running():  # a test stopped it and failed before restarting
            pg_server.start()
        pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run the test against both stores; sqlite-only selections never start PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/modelmon.db"
    return str(request.getfixturevalue("pg_url"))
