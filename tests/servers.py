"""Start and stop the real servers integration tests run against.

Kept free of pytest so fixture files, benchmarks and ad-hoc scripts can reuse it.
Every process started here is also registered with :mod:`atexit`, so an
interrupted session does not leave brokers or PostgreSQL clusters behind.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

from modelmon.demo.broker import Broker, create_topics  # noqa: F401 - re-exported
from modelmon.demo.processes import (  # noqa: F401 - re-exported for tests and benchmarks
    HOST,
    Child,
    StartError,
    free_port,
    log_tail,
    port_open,
    wait_until,
)

SETUP_HINT = "run `make setup` (scripts/setup.sh) to install it"
PG_BIN = Path("/usr/lib/postgresql/15/bin")

#: Consumer settings for Tansu: a group join waits about half the session
#: timeout, so the 10 s default makes every test that joins a group slow.
TANSU_CONSUMER_DEFAULTS: dict[str, int] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
}


class MissingBinaryError(RuntimeError):
    """A server binary is not installed; the message names the setup command."""


#: A server did not come up; the message carries the tail of its log.
ServerStartError = StartError


# --------------------------------------------------------------------------- helpers
# Process and port helpers are the demo's own (modelmon.demo.processes): one
# implementation for the demo, the tests and the benchmarks.


def require_executable(path: Path, what: str) -> Path:
    """Fail loudly (never skip) when a server binary is missing."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingBinaryError(f"{what} not found at {path}: {SETUP_HINT}")
    return path


# --------------------------------------------------------------------------- Kafka (Tansu)


def new_topic_name(prefix: str = "test") -> str:
    """A topic name no other test (or earlier run against the same broker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def delete_topics(bootstrap: str, names: Iterable[str]) -> None:
    """Best-effort delete, so a long session does not grow the in-memory broker."""
    from kafka import KafkaAdminClient

    names = list(names)
    if not names:
        return
    with contextlib.suppress(Exception):
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            admin.delete_topics(names)
        finally:
            admin.close()


def start_tansu(workdir: Path | None = None) -> Broker:
    """Start the demo's Tansu broker (memory only), logging to `workdir` (a new temp dir by default)."""
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="modelmon-tansu-"))
    broker = Broker(workdir)
    try:
        broker.start()
    except FileNotFoundError as exc:
        raise MissingBinaryError(f"{exc}; {SETUP_HINT}") from None
    return broker


# --------------------------------------------------------------------------- PostgreSQL


PG_DIR_PREFIX = "modelmon-pg-"
OWNER_FILE = "owner.pid"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale_clusters() -> None:
    """Stop and delete clusters left by test sessions that were SIGKILLed.

    pg_ctl daemonizes postgres, so unlike the broker it does not die with us.
    Only clusters whose owning process is gone are touched, so concurrent
    sessions on the same machine are safe.
    """
    for root in Path(tempfile.gettempdir()).glob(f"{PG_DIR_PREFIX}*"):
        try:
            owner = int((root / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if _pid_alive(owner):
            continue
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        with contextlib.suppress(Exception):
            subprocess.run(
                [
                    *prefix,
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(root / "data"),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)


class PostgresServer:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1, tuned for speed over durability.

    initdb refuses to run as root, so when we are root every binary runs as the
    ``postgres`` user and the cluster directory is owned by it.
    """

    SPEED_OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"

    def __init__(self, bin_dir: Path = PG_BIN):
        self.bin_dir = bin_dir
        for name in ("initdb", "pg_ctl", "postgres"):
            require_executable(bin_dir / name, f"PostgreSQL 15 `{name}`")
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            try:
                self._pg_user = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise MissingBinaryError(
                    f"running as root but there is no `postgres` user: {SETUP_HINT}"
                ) from exc
        # Not under pytest's tmp_path: that is 0700 root and postgres could not enter it.
        reap_stale_clusters()
        self.root = Path(tempfile.mkdtemp(prefix=PG_DIR_PREFIX))
        (self.root / OWNER_FILE).write_text(str(os.getpid()))
        if self._as_postgres:
            os.chown(self.root, self._pg_user.pw_uid, self._pg_user.pw_gid)
        self.datadir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = 0
        self.host = HOST
        self._cleaned = False
        atexit.register(self.cleanup)

    # -- process control

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        return subprocess.run(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _check(self, result: subprocess.CompletedProcess[str], what: str) -> None:
        if result.returncode != 0:
            raise ServerStartError(
                f"{what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            )

    def _options(self) -> str:
        return f"-p {self.port} -k {self.root} -c listen_addresses={HOST} {self.SPEED_OPTIONS}"

    def init(self) -> None:
        """Create the cluster (trust auth: it only listens on 127.0.0.1 and a private socket)."""
        self._check(
            self._run(
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ),
            "initdb",
        )

    def start(self, timeout: int = 60) -> None:
        """Start (or restart after :meth:`stop`) on the same port with the same options."""
        if not self.port:
            self.port = free_port()
        self._check(
            self._run(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(timeout),
                "-o",
                self._options(),
                "start",
                timeout=timeout + 10,
            ),
            f"pg_ctl start on port {self.port}",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``fast`` disconnects clients, like a crash seen from outside."""
        if self.running():
            self._check(
                self._run(
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.datadir),
                    "-w",
                    "-m",
                    mode,
                    "stop",
                ),
                "pg_ctl stop",
            )

    def running(self) -> bool:
        if not self.datadir.exists():
            return False
        result = self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.datadir), "status")
        return result.returncode == 0

    def cleanup(self) -> None:
        """Stop the server and delete the cluster; safe to call more than once."""
        if self._cleaned:
            return
        self._cleaned = True
        try:
            with contextlib.suppress(Exception):
                self.stop("fast")
            with contextlib.suppress(Exception):
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            atexit.unregister(self.cleanup)

    # -- databases

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) for a database on this server."""
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq DSN, for talking to the server with plain psycopg."""
        return f"host={self.host} port={self.port} user=postgres dbname={dbname}"

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        """Drop even if a test left connections open (pool, crashed worker)."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_postgres() -> PostgresServer:
    """initdb + start; on failure the half-made cluster is removed before raising."""
    server = PostgresServer()
    try:
        server.init()
        last: Exception | None = None
        for _ in range(3):  # the free port may be grabbed before postgres binds it
            try:
                server.start()
                return server
            except ServerStartError as exc:
                last = exc
                server.port = 0
        raise last or ServerStartError("PostgreSQL did not start")
    except BaseException:
        server.cleanup()
        raise
