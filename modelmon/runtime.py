"""The long-running service: `modelmon run` and `modelmon monitor`.

`modelmon run` = ingest thread + monitor scheduler + HTTP server in one process
(the embedded, single-node deployment); `modelmon monitor` = scheduler + HTTP
server, for deployments that run ingest as its own process. Both stop cleanly
on SIGTERM/SIGINT: ingest commits its last batch, the scheduler finishes its
running job, then the HTTP server closes.

`Runtime` is the embeddable form (demo, tests):

    rt = Runtime(cfg, with_ingest=True); rt.start(); ... ; rt.stop()
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from typing import Any

from modelmon.config import Config

log = logging.getLogger(__name__)


class Runtime:
    """Ingest (optional), monitor scheduler and HTTP endpoints in one process."""

    def __init__(
        self,
        cfg: Config,
        with_ingest: bool = True,
        *,
        host: str | None = None,
        port: int | None = None,
        migrate: bool = True,
        metrics_refresh_seconds: float | None = None,
        metrics_cache_seconds: float | None = None,
    ) -> None:
        """`metrics_refresh_seconds`: how often /metrics' monitor results are read and
        rendered (default min(shortest monitor interval, 15 s); 0 = on every scrape).
        `metrics_cache_seconds` is its former name."""
        self.cfg = cfg
        self.with_ingest = with_ingest
        self.host = cfg.server.host if host is None else host
        self._port = cfg.server.port if port is None else port
        self.migrate = migrate
        if metrics_refresh_seconds is None:
            metrics_refresh_seconds = metrics_cache_seconds
        if metrics_refresh_seconds is None:
            intervals = [cfg.model(m).interval for m in cfg.models] + [cfg.model("_").interval]
            metrics_refresh_seconds = min(15.0, *intervals)
        self.metrics_refresh_seconds = float(metrics_refresh_seconds)
        self.engine: Any = None
        self.registry: Any = None  # the live part of /metrics: ingest (and scheduler) metrics
        self.exposition: Any = None  # /metrics: monitor results rendered once per refresh + registry
        self.scheduler: Any = None
        self.ingest: Any = None
        self.ingest_metrics: Any = None
        self.error: BaseException | None = None
        self._http: Any = None
        self._producer: Any = None
        self._ingest_thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._ingest_stop = threading.Event()
        self._started = False
        self._stopped = False
        self._store_check: tuple[float, bool] = (-1e9, False)
        self._first_pass_at: float | None = None

    @property
    def http_port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._http is None:
            raise RuntimeError("Runtime not started")
        return int(self._http.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    # -- lifecycle ------------------------------------------------------------

    def start(self, wait_for_store: bool = False) -> None:
        """`wait_for_store`: retry connecting (and migrating) with backoff while the store is
        unreachable, until `request_stop()`; if that comes first, nothing else is started."""
        from prometheus_client import CollectorRegistry

        from modelmon.alerts.endpoints import register_endpoints
        from modelmon.alerts.exporter import MonitorResultsCollector
        from modelmon.alerts.exposition import MetricsExposition
        from modelmon.api.auth import ScrapeAuth
        from modelmon.api.producer import feedback_producer
        from modelmon.api.routes import register as api_register
        from modelmon.http import HttpServer, Router
        from modelmon.monitors.scheduler import MonitorScheduler
        from modelmon.store.engine import make_engine

        if self._started:
            raise RuntimeError("Runtime already started")
        self._started = True
        db = self.cfg.database
        self.engine = make_engine(db.url, echo=db.echo, pool_size=db.pool_size)
        if not self._prepare_store(wait_for_store):
            log.info("stop requested before the store was reachable")
            return
        # /metrics = the monitor results, read and rendered by a background thread
        # once per refresh period, followed by this registry's live, small metrics.
        self.registry = CollectorRegistry()
        self.exposition = MetricsExposition(
            MonitorResultsCollector(self.engine, self.cfg), self.registry, self.metrics_refresh_seconds
        )
        try:
            if self.with_ingest:
                self._start_ingest()
            if self.cfg.monitors.enabled:
                self.scheduler = MonitorScheduler(self.cfg, self.engine)
                self.scheduler.start()
                # How far behind schedule each family is: live, from memory.
                self.registry.register(self.scheduler.collector())
            self.exposition.start()
            router = Router()
            metrics_auth = ScrapeAuth(self.cfg.server.metrics_tokens)
            register_endpoints(
                router, self.exposition, self.health, self.readiness,
                metrics_auth if metrics_auth.enabled else None,
            )
            # `run` sends HTTP feedback through Kafka like every other label;
            # `monitor` (often without Kafka access) writes it to the store.
            if self.with_ingest:
                self._producer = feedback_producer(self.cfg)
            api_register(router, self.cfg, self.engine, self._producer)
            self._http = HttpServer(router, self.host, self._port)
            self._http.start()
        except BaseException:
            self.stop()
            raise
        log.info(
            "modelmon %s serving on http://%s:%d (/metrics, /healthz, /readyz)",
            "run" if self.with_ingest else "monitor", self.host, self.http_port,
        )

    def _prepare_store(self, wait: bool) -> bool:
        """Migrate (or, with migrate=False and `wait`, just connect); False if stopped first."""
        from modelmon.store.engine import wait_for_database
        from modelmon.store.migrate import upgrade

        def attempt() -> bool:
            if self.migrate:
                upgrade(self.engine, cfg=self.cfg)
            elif wait:
                with self.engine.connect():
                    pass
            return True

        if not wait:
            return attempt()
        return wait_for_database(attempt, self.engine.url, self._stop_requested) is not None

    def _start_ingest(self) -> None:
        from modelmon.ingest.metrics import IngestMetrics, latency_buckets_for
        from modelmon.ingest.service import IngestService

        self.ingest_metrics = IngestMetrics(self.registry, latency_buckets_for(self.cfg))
        self.ingest = IngestService(self.cfg, self.engine, self.ingest_metrics)
        self._ingest_thread = threading.Thread(target=self._run_ingest, name="ingest", daemon=True)
        self._ingest_thread.start()

    def _run_ingest(self) -> None:
        try:
            self.ingest.run(self._ingest_stop)
        except BaseException as exc:  # a dead consumer must take the process down
            log.exception("ingest stopped with an error")
            self.error = exc
        finally:
            if not self._ingest_stop.is_set():
                self.request_stop()

    def request_stop(self) -> None:
        """Ask `wait()` to return; safe from a signal handler."""
        self._stop_requested.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop is requested (or ingest died); True if it was."""
        return self._stop_requested.wait(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        """Ingest first (its last batch commits), then monitors, then HTTP. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_requested.set()
        self._ingest_stop.set()
        if self._ingest_thread is not None:
            self._ingest_thread.join(timeout)
            if self._ingest_thread.is_alive():
                log.warning("ingest did not stop within %.0f s", timeout)
        if self.exposition is not None:
            self.exposition.stop()
        if self.scheduler is not None:
            try:
                self.scheduler.stop()
            except Exception:
                log.exception("stopping the monitor scheduler failed")
        if self._http is not None:
            self._http.stop()
        if self._producer is not None:
            self._producer.close(timeout=5)
        if self.engine is not None:
            self.engine.dispose()

    def __enter__(self) -> Runtime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- health ---------------------------------------------------------------

    def _store_reachable(self) -> bool:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        checked_at, ok = self._store_check
        if time.monotonic() - checked_at < 1.0:
            return ok
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            ok = True
        except SQLAlchemyError:
            ok = False
        self._store_check = (time.monotonic(), ok)
        return ok

    def health(self) -> dict[str, bool]:
        """Liveness: a dead ingest thread, or a batch uncommitted for `ingest.stall_after`
        (a store that refuses or hangs), is unhealthy; restarting may cure either, and
        either way the probe tells the operator ingest is not making progress."""
        checks = {"http": True}
        if self.with_ingest:
            checks["ingest"] = self._ingest_thread is not None and self._ingest_thread.is_alive()
            stalled = self.ingest is not None and self.ingest.stalled_for() >= self.cfg.ingest.stall_after
            checks["ingest_progress"] = not stalled
        return checks

    def readiness(self) -> dict[str, bool]:
        checks = {"store": self._store_reachable()}
        if self.cfg.monitors.enabled:
            checks["first_monitor_pass"] = self._first_pass_rendered()
        return checks

    def _first_pass_rendered(self) -> bool:
        """The first monitor pass is done and /metrics serves results read after it."""
        if not (self.scheduler and self.scheduler.first_pass_done):
            return False
        if self._first_pass_at is None:
            self._first_pass_at = time.monotonic()
            self.exposition.wake()
        return bool(self.exposition.refreshed_since(self._first_pass_at))

    def ready(self) -> bool:
        return all(self.readiness().values())


def _serve(args: argparse.Namespace, cfg: Config, with_ingest: bool) -> int:
    if getattr(args, "once", False):
        from modelmon.monitors.once import monitor_once

        return monitor_once(cfg)
    runtime = Runtime(cfg, with_ingest=with_ingest, host=args.host, port=args.port)

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        runtime.request_stop()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        runtime.start(wait_for_store=True)
        while not runtime.wait(1.0):
            pass
    finally:
        runtime.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 1 if runtime.error is not None else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, with_ingest, text in (
        ("run", True, "ingest + monitors + HTTP (/metrics, /healthz, /readyz, /v1) in one process"),
        ("monitor", False, "monitors + HTTP, for when ingest runs as its own process"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--host", help="bind address (default: server.host)")
        p.add_argument("--port", type=int, help="HTTP port (default: server.port; 0 = any free port)")
        if not with_ingest:
            p.add_argument("--once", action="store_true",
                           help="run one pass of every monitor family, print a table of the "
                           "results and exit (1 if a job failed): for cron, CI and a first look")
        p.set_defaults(handler=lambda args, cfg, _w=with_ingest: _serve(args, cfg, _w))
