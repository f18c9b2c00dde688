"""`modelmon ingest`: run the Kafka consumer until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from modelmon.config import Config

log = logging.getLogger(__name__)


def _ingest(args: argparse.Namespace, cfg: Config) -> int:
    import sqlalchemy as sa
    from prometheus_client import CollectorRegistry

    from modelmon.ingest.metrics import IngestMetrics, latency_buckets_for
    from modelmon.ingest.service import IngestService
    from modelmon.store.engine import make_engine, wait_for_database

    engine = make_engine(cfg.database.url, echo=cfg.database.echo, pool_size=cfg.database.pool_size)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("%s received: flushing the open batch, committing and stopping",
                 signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # A store that is not up yet (compose, a restarted server) is waited for, with backoff.
    has_tables = wait_for_database(lambda: sa.inspect(engine).has_table("predictions"), engine.url, stop)
    if has_tables is None:  # stopped while waiting
        engine.dispose()
        return 0
    if not has_tables:
        engine.dispose()
        print("modelmon: the store has no tables yet; run `modelmon db upgrade` first", file=sys.stderr)
        return 2
    metrics = IngestMetrics(CollectorRegistry(), latency_buckets_for(cfg))
    IngestService(cfg, engine, metrics).run(stop)
    engine.dispose()
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "ingest",
        help="consume prediction and feedback logs from Kafka into the store",
        description="Consume the predictions and feedback topics (consumer group kafka.group_id) "
        "into the store until SIGTERM/SIGINT, which flush the open batch and exit 0.",
    )
    p.set_defaults(handler=_ingest)
