"""Ingest as a thread of a long-running process, and what its health probe checks.

Both `modelmon run` (ingest beside monitors and the API) and `modelmon ingest`
(ingest alone) run `IngestService.run` in an `IngestThread` and answer
/healthz with `ingest_checks`: one definition of "ingest is alive and making
progress" for every process that ingests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from modelmon.config import Config

log = logging.getLogger(__name__)


def ingest_checks(thread: Any, service: Any, stall_after: float) -> dict[str, bool]:
    """Liveness of ingest: its thread runs (the consumer is connected, or retrying to
    connect), and no batch has waited uncommitted for `stall_after` (a store that
    refuses or hangs). Restarting may cure either; either way the probe tells the
    operator that ingest makes no progress."""
    stalled = service is not None and service.stalled_for() >= stall_after
    return {
        "ingest": thread is not None and thread.is_alive(),
        "ingest_progress": not stalled,
    }


def consumer_connected(service: Any) -> bool:
    """Whether the service has a Kafka consumer (connected at least once)."""
    return service is not None and getattr(service, "consumer", None) is not None


class IngestThread:
    """`IngestService.run` in a daemon thread; `on_exit()` is called if it ends by itself
    (a dead consumer must take the process down), with the error in `error`."""

    def __init__(self, cfg: Config, engine: Any, metrics: Any, on_exit: Callable[[], None]) -> None:
        from modelmon.ingest.service import IngestService

        self.metrics = metrics  # modelmon.ingest.metrics.IngestMetrics
        self.service = IngestService(cfg, engine, metrics)
        self.error: BaseException | None = None
        self._on_exit = on_exit
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ingest", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            self.service.run(self._stop)
        except BaseException as exc:  # reported by the process, which then exits non-zero
            log.exception("ingest stopped with an error")
            self.error = exc
        finally:
            if not self._stop.is_set():
                self._on_exit()

    def stop(self, timeout: float = 20.0) -> None:
        """Flush and commit the open batch, then end the thread (up to `timeout` seconds)."""
        self._stop.set()
        if self.thread.ident is not None:
            self.thread.join(timeout)
            if self.thread.is_alive():
                log.warning("ingest did not stop within %.0f s", timeout)
