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
import sys
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
        port_file: str | None = None,
    ) -> None:
        """`metrics_refresh_seconds`: how often /metrics' monitor results are read and
        rendered (default min(shortest monitor interval, 15 s); 0 = on every scrape).
        `metrics_cache_seconds` is its former name. `port_file`: where to write the
        bound port once listening (for port 0)."""
        self.cfg = cfg
        self.with_ingest = with_ingest
        self.host = cfg.server.host if host is None else host
        self._port = cfg.server.port if port is None else port
        self.migrate = migrate
        self.port_file = port_file
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
        self._ingester: Any = None  # modelmon.ingest.process.IngestThread
        self._ingest_thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._started = False
        self._stopped = False
        self._store_reachable: Any = None  # modelmon.serving.StoreProbe
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

    @property
    def role(self) -> str:
        return "run" if self.with_ingest else "monitor"

    # -- lifecycle ------------------------------------------------------------

    def start(self, wait_for_store: bool = False) -> None:
        """`wait_for_store`: retry connecting (and migrating) with backoff while the store is
        unreachable, until `request_stop()`; if that comes first, nothing else is started."""
        from modelmon.alerts.exporter import MonitorResultsCollector
        from modelmon.alerts.exposition import MetricsExposition
        from modelmon.api.producer import feedback_producer
        from modelmon.api.routes import register as api_register
        from modelmon.monitors.scheduler import MonitorScheduler
        from modelmon.serving import ProcessServer, StoreProbe, process_registry
        from modelmon.store.engine import make_engine

        if self._started:
            raise RuntimeError("Runtime already started")
        self._started = True
        db = self.cfg.database
        self.engine = make_engine(db.url, echo=db.echo, pool_size=db.pool_size)
        self._store_reachable = StoreProbe(self.engine)
        if not self._prepare_store(wait_for_store):
            log.info("stop requested before the store was reachable")
            return
        # /metrics = the monitor results, read and rendered by a background thread
        # once per refresh period, followed by this registry's live, small metrics.
        self.registry = process_registry()
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
            # `run` sends HTTP feedback through Kafka like every other label;
            # `monitor` (often without Kafka access) writes it to the store.
            if self.with_ingest:
                self._producer = feedback_producer(self.cfg)
            self._http = ProcessServer(
                self.cfg, self.exposition, self.health, self.readiness, self.host, self._port,
                routes=lambda router: api_register(router, self.cfg, self.engine, self._producer),
            )
            self._http.start(self.role, self.port_file)
        except BaseException:
            self.stop()
            raise

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
        from modelmon.ingest.process import IngestThread

        metrics = IngestMetrics(self.registry, latency_buckets_for(self.cfg))
        self._ingester = IngestThread(self.cfg, self.engine, metrics, self._on_ingest_exit)
        self.ingest, self.ingest_metrics = self._ingester.service, self._ingester.metrics
        self._ingest_thread = self._ingester.thread
        self._ingester.start()

    def _on_ingest_exit(self) -> None:
        """Ingest ended by itself: an error, or a consumer that gave up. Stop the process."""
        self.error = self._ingester.error
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
        if self._ingester is not None:
            self._ingester.stop(timeout)
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

    def health(self) -> dict[str, bool]:
        """Liveness: a dead ingest thread, or a batch uncommitted for `ingest.stall_after`
        (see modelmon.ingest.process.ingest_checks)."""
        from modelmon.ingest.process import ingest_checks

        checks = {"http": True}
        if self.with_ingest:
            checks.update(ingest_checks(self._ingest_thread, self.ingest, self.cfg.ingest.stall_after))
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
    from modelmon.serving import bind_error, is_bind_error

    runtime = Runtime(cfg, with_ingest=with_ingest, host=args.host, port=args.port,
                      port_file=args.port_file)

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        runtime.request_stop()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        runtime.start(wait_for_store=True)
        while not runtime.wait(1.0):
            pass
    except OSError as exc:
        if not is_bind_error(exc):
            raise
        print(f"modelmon: {bind_error(exc, runtime.host, runtime._port, '--port')}", file=sys.stderr)
        return 2
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
        p.add_argument("--port-file", metavar="PATH",
                       help="write the bound HTTP port to PATH once listening (with --port 0)")
        if not with_ingest:
            p.add_argument("--once", action="store_true",
                           help="run one pass of every monitor family, print a table of the "
                           "results and exit (1 if a job failed): for cron, CI and a first look")
        p.set_defaults(handler=lambda args, cfg, _w=with_ingest: _serve(args, cfg, _w))
