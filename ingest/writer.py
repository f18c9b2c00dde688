"""The batch writer: one thread that stores batches, one transaction each.

It runs beside the polling loop so that Kafka fetches and database round
trips overlap. A batch is retried as is (same records, same order) while the
database is unreachable, with exponential backoff bounded by
`ingest.db_retry_max`; the polling loop meanwhile holds its offsets back.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from modelmon.ingest.batch import Batch, Parsed, dead_letter, parse_records
from modelmon.store.rollups import Specs
from modelmon.store.writes import BatchOutcome, DeadLetter, write_batch

log = logging.getLogger(__name__)

# Errors after which the same batch may succeed later: the server is down, the
# connection broke, SQLite is locked. Anything else is about the data.
TRANSIENT = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError, OSError)


@dataclass(eq=False)
class Job:
    batch: Batch
    generation: int
    parsed: Parsed | None = None
    outcome: BatchOutcome | None = None
    error: str | None = None
    attempts: int = 0
    duration: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)


class BatchWriter:
    def __init__(
        self,
        engine: sa.Engine,
        predictions_topic: str,
        feedback_topic: str,
        max_message_bytes: int,
        payload_limit: int,
        retry_initial: float,
        retry_max: float,
        on_db_error: Any = None,
        specs: Specs | None = None,
    ) -> None:
        self.engine = engine
        self.specs = specs  # rollup specs of the configuration (None: built-in defaults)
        self.predictions_topic = predictions_topic
        self.feedback_topic = feedback_topic
        self.max_message_bytes = max_message_bytes
        self.payload_limit = payload_limit
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.on_db_error = on_db_error
        self.failing_since: float | None = None  # read by the status line
        self.busy_seconds = 0.0  # time spent parsing and writing, for the status line
        self.parse_seconds = 0.0
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="ingest-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> Job:
        self._queue.put(job)
        return job

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            started = time.perf_counter()
            try:
                self._process(job)
            except Exception as exc:  # never let the writer thread die silently
                log.exception("ingest writer failed on a batch")
                job.error = repr(exc)
            finally:
                self.busy_seconds += time.perf_counter() - started
                job.done.set()

    def _process(self, job: Job) -> None:
        if job.cancelled.is_set():
            job.error = "cancelled"
            return
        if job.parsed is None:
            t_parse = time.perf_counter()
            job.parsed = parse_records(
                job.batch.records, self.predictions_topic, self.feedback_topic,
                self.max_message_bytes, self.payload_limit,
            )
            self.parse_seconds += time.perf_counter() - t_parse
        delay = self.retry_initial
        while True:
            job.attempts += 1
            started = time.perf_counter()
            try:
                job.outcome = self._write(job.parsed)
                job.duration = time.perf_counter() - started
                if self.failing_since is not None:
                    log.info(
                        "store reachable again after %.1f s; resuming",
                        time.monotonic() - self.failing_since,
                    )
                    self.failing_since = None
                return
            except TRANSIENT as exc:
                self._note_failure(exc, job, delay)
            except Exception as exc:
                # The store refused something in this batch (not a connection
                # problem), or a bug: find the events it refuses and dead-letter
                # them, so that one bad event cannot stall ingest.
                log.warning("store rejected a batch (%s); writing its events one by one", _short(exc))
                try:
                    job.outcome = self._write_isolated(job)
                    job.duration = time.perf_counter() - started
                    return
                except TRANSIENT as exc2:
                    self._note_failure(exc2, job, delay)
                except Exception:
                    log.exception("could not store a batch even event by event; retrying it")
            if job.cancelled.wait(delay):
                job.error = "cancelled"
                return
            delay = min(delay * 2, self.retry_max)

    def _note_failure(self, exc: BaseException, job: Job, delay: float) -> None:
        if self.on_db_error is not None:
            self.on_db_error()
        first = self.failing_since is None
        if first:
            self.failing_since = time.monotonic()
        # One line per failure would flood the log during an outage: log the
        # first, then only when the backoff has grown.
        if first or delay >= self.retry_max or job.attempts <= 3:
            log.warning(
                "store unavailable (%s); offsets held back, retrying the same %d-message "
                "batch in %.1f s", _short(exc), len(job.batch), delay,
            )

    def _write(self, parsed: Parsed) -> BatchOutcome:
        with self.engine.begin() as conn:
            return write_batch(
                conn, parsed.predictions, parsed.feedback, parsed.dead_letters, specs=self.specs
            )

    def _write_isolated(self, job: Job) -> BatchOutcome:
        """Write event by event; those the store rejects become dead letters."""
        assert job.parsed is not None
        raw = {(r.topic, r.partition, r.offset): r.value for r in job.batch.records}
        total = BatchOutcome()
        rejected: list[DeadLetter] = []
        singles: list[tuple[list[Any], list[Any]]] = [([p], []) for p in job.parsed.predictions]
        singles += [([], [f]) for f in job.parsed.feedback]
        for preds, fbs in singles:
            try:
                with self.engine.begin() as conn:
                    total.merge(write_batch(conn, preds, fbs, [], specs=self.specs))
            except TRANSIENT:
                raise
            except Exception as exc:
                pos = (preds or fbs)[0][1]
                detail = f"the store rejected the event: {_short(exc)}"
                rejected.append(
                    dead_letter("store_rejected", detail, raw.get((pos.topic, pos.partition, pos.offset)),
                                pos, self.payload_limit)
                )
        job.parsed.dead_letters.extend(rejected)
        with self.engine.begin() as conn:
            total.merge(write_batch(conn, [], [], job.parsed.dead_letters))
        return total


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
