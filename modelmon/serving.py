"""What every long-running modelmon process serves: /metrics, /healthz and /readyz.

`modelmon run`, `modelmon monitor` and `modelmon ingest` each serve their own
metrics on their own port (scale-out: Prometheus scrapes every process and the
generated rules aggregate across them). They share these pieces instead of
each wiring a server: `ProcessServer` binds one port with the API's server
(modelmon/http.py) and the same /metrics endpoint (scrape auth, OpenMetrics
and gzip negotiation, `?name[]=` filtering); `RegistryExposition` is /metrics
for a process without monitor results (ingest: its live registry, rendered per
scrape); `StoreProbe` is the cached "store reachable" readiness check.

The bound port is logged and, with `--port-file`, written to a file once the
socket listens, so `--port 0` (any free port) is usable by scripts and tests.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder, gzip_accepted

from modelmon.config import Config
from modelmon.http import HttpServer, Router

log = logging.getLogger(__name__)

Check = Callable[[], dict[str, bool]]


class Exposition(Protocol):
    def serve(self, accept: str = "", accept_encoding: str = "") -> tuple[bytes, str, list[tuple[str, str]]]:
        """(body, content type, extra headers) for a scrape with these request headers."""


def process_registry() -> CollectorRegistry:
    """A registry holding the standard process_* and python_info metrics (CPU, memory,
    open files, start time): each process is its own target, so its own resources show."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


class RegistryExposition:
    """/metrics of a live registry, negotiated like prometheus_client's own WSGI app:
    OpenMetrics when the scraper accepts it, else text 0.0.4; gzip when accepted."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def serve(self, accept: str = "", accept_encoding: str = "") -> tuple[bytes, str, list[tuple[str, str]]]:
        encoder, content_type = choose_encoder(accept)
        body = encoder(self.registry)
        if gzip_accepted(accept_encoding):
            return gzip.compress(body, 1), content_type, [("Content-Encoding", "gzip")]
        return body, content_type, []


class StoreProbe:
    """`SELECT 1` against the store, at most once per `cache_seconds` (probes are frequent)."""

    def __init__(self, engine: Any, cache_seconds: float = 1.0) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self._last: tuple[float, bool] = (-1e9, False)

    def __call__(self) -> bool:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        checked_at, ok = self._last
        if time.monotonic() - checked_at < self.cache_seconds:
            return ok
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            ok = True
        except SQLAlchemyError:
            ok = False
        self._last = (time.monotonic(), ok)
        return ok


def write_port_file(path: str | os.PathLike[str], port: int) -> None:
    """Write `port` atomically (a reader never sees a half-written number)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"{port}\n")
    os.replace(tmp, target)


class ProcessServer:
    """/metrics, /healthz, /readyz (and `routes`, e.g. the /v1 API) of one process on one port.

    `health` answers whether the process should be restarted, `readiness` whether
    it is ready (see modelmon/alerts/endpoints.py); each returns named checks.
    /metrics needs `server.metrics_tokens` when set, in every process alike.
    """

    def __init__(
        self,
        cfg: Config,
        exposition: Exposition,
        health: Check,
        readiness: Check,
        host: str,
        port: int,
        routes: Callable[[Router], None] | None = None,
    ) -> None:
        from modelmon.alerts.endpoints import register_endpoints
        from modelmon.api.auth import ScrapeAuth

        router = Router()
        auth = ScrapeAuth(cfg.server.metrics_tokens)
        register_endpoints(router, exposition, health, readiness, auth if auth.enabled else None)  # type: ignore[arg-type]
        if routes is not None:
            routes(router)
        self.host = host
        self._http = HttpServer(router, host, port)  # binds now: a taken port fails here

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, what: str, port_file: str | os.PathLike[str] | None = None) -> None:
        """Serve from a background thread; log (and write to `port_file`) the bound port."""
        self._http.start()
        log.info("modelmon %s serving on %s (/metrics, /healthz, /readyz)", what, self.url)
        if port_file:
            write_port_file(port_file, self.port)

    def stop(self) -> None:
        self._http.stop()


def is_bind_error(exc: OSError) -> bool:
    """The port is taken, privileged, or the address is not this host's."""
    return exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)


def bind_error(exc: OSError, host: str, port: int, flag: str) -> str:
    """The one-line message for a port that cannot be bound."""
    return (f"cannot listen on {host}:{port} ({exc.strerror or exc}): another process has the "
            f"port? Pass {flag} (0 = any free port) or change the configuration")
