"""`modelmon ingest`: run the Kafka consumer until SIGTERM/SIGINT, serving its own metrics.

In the scale-out layout every ingest process is a Prometheus target of its own:
it serves /metrics (its ingest counters, the SLO latency histogram, dead
letters, lag, and process metrics), /healthz and /readyz on `ingest.http_port`
(9465; `--port` overrides, 0 = any free port, `--port-file` says which). The
server is bound before anything else, so a taken port fails at once, and it
answers while the store is still being waited for (/healthz 200: waiting is
not a reason to restart; /readyz 503).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from modelmon.config import Config

log = logging.getLogger(__name__)


class _IngestProcess:
    """The pieces of one `modelmon ingest` process and its probes."""

    def __init__(self, cfg: Config) -> None:
        from modelmon.ingest.metrics import IngestMetrics, latency_buckets_for
        from modelmon.serving import RegistryExposition, StoreProbe, process_registry
        from modelmon.store.engine import make_engine

        self.cfg = cfg
        db = cfg.database
        self.engine = make_engine(db.url, echo=db.echo, pool_size=db.pool_size)
        self.store_reachable = StoreProbe(self.engine)
        self.registry = process_registry()
        # Registered before the store is there: every scrape shows the same families.
        self.metrics = IngestMetrics(self.registry, latency_buckets_for(cfg))
        self.exposition = RegistryExposition(self.registry)
        self.stop = threading.Event()
        self.ingester: Any = None  # modelmon.ingest.process.IngestThread, once the store is there

    def health(self) -> dict[str, bool]:
        from modelmon.ingest.process import ingest_checks

        checks = {"http": True}
        if self.ingester is not None:
            checks.update(ingest_checks(self.ingester.thread, self.ingester.service,
                                        self.cfg.ingest.stall_after))
        return checks

    def readiness(self) -> dict[str, bool]:
        from modelmon.ingest.process import consumer_connected

        service = self.ingester.service if self.ingester is not None else None
        return {"store": self.store_reachable(), "consumer": consumer_connected(service)}


def _ingest(args: argparse.Namespace, cfg: Config) -> int:
    import sqlalchemy as sa

    from modelmon.ingest.process import IngestThread
    from modelmon.serving import ProcessServer, bind_error, is_bind_error
    from modelmon.store.engine import wait_for_database

    proc = _IngestProcess(cfg)
    host = cfg.server.host if args.host is None else args.host
    port = cfg.ingest.http_port if args.port is None else args.port
    try:
        server = ProcessServer(cfg, proc.exposition, proc.health, proc.readiness, host, port)
    except OSError as exc:
        proc.engine.dispose()
        if not is_bind_error(exc):
            raise
        print(f"modelmon: {bind_error(exc, host, port, '--port')}", file=sys.stderr)
        return 2

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("%s received: flushing the open batch, committing and stopping",
                 signal.Signals(signum).name)
        proc.stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    server.start("ingest", args.port_file)
    try:
        # A store that is not up yet (compose, a restarted server) is waited for, with backoff.
        has_tables = wait_for_database(
            lambda: sa.inspect(proc.engine).has_table("predictions"), proc.engine.url, proc.stop
        )
        if has_tables is None:  # stopped while waiting
            return 0
        if not has_tables:
            print("modelmon: the store has no tables yet; run `modelmon db upgrade` first",
                  file=sys.stderr)
            return 2
        proc.ingester = IngestThread(cfg, proc.engine, proc.metrics, proc.stop.set)
        proc.ingester.start()
        while not proc.stop.wait(1.0):
            pass
        proc.ingester.stop()
        return 1 if proc.ingester.error is not None else 0
    finally:
        server.stop()
        proc.engine.dispose()
        for s, handler in previous.items():
            signal.signal(s, handler)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "ingest",
        help="consume prediction and feedback logs from Kafka into the store",
        description="Consume the predictions and feedback topics (consumer group kafka.group_id) "
        "into the store until SIGTERM/SIGINT, which flush the open batch and exit 0. Serves "
        "/metrics, /healthz and /readyz on ingest.http_port.",
    )
    p.add_argument("--host", help="bind address of /metrics, /healthz, /readyz (default: server.host)")
    p.add_argument("--port", type=int,
                   help="their port (default: ingest.http_port, 9465; 0 = any free port)")
    p.add_argument("--port-file", metavar="PATH",
                   help="write the bound port to PATH once listening (with --port 0)")
    p.set_defaults(handler=_ingest)
