"""The batch writer: one thread that stores batches, one transaction each.

It runs beside the polling loop so that Kafka fetches and database round
trips overlap. What it does with a failed write depends on the error
(`modelmon.ingest.errors.classify`): while the store is unreachable or busy, the same batch is
retried as is, with exponential backoff bounded by `ingest.db_retry_max`, and
the polling loop holds its offsets back; when the store refuses the batch
itself (too large, too slow, or an event it will not take), retrying cannot
help, so the batch is split in halves, recursively, and only single events
the store refuses become `store_rejected` dead letters.

With a `StoreProcess` (`ingest.write_process`, the service's default) the
transaction itself runs in a child process (`modelmon.ingest.store_process`):
this thread keeps the retry / split / reject logic and waits on the pipe, so the
store's Python CPU no longer shares a GIL with the consumer loop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from modelmon.contract import Feedback, Prediction
from modelmon.ingest.batch import Batch, Parsed, dead_letter, parse_records
from modelmon.ingest.errors import Failure, classify
from modelmon.ingest.errors import short_text as _short
from modelmon.ingest.store_process import StoreProcess
from modelmon.store.rollups import Specs
from modelmon.store.statistics import PartitionAnalyzer
from modelmon.store.writes import BatchOutcome, DeadLetter, Position, write_batch

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    batch: Batch
    generation: int
    parsed: Parsed | None = None
    outcome: BatchOutcome | None = None
    error: str | None = None
    attempts: int = 0
    duration: float = 0.0
    # Events the store refused one by one (now `store_rejected` dead letters).
    rejected: list[Position] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    cancelled: threading.Event = field(default_factory=threading.Event)


# One event of a batch, in batch order: ("p", prediction, position) or ("f", feedback, position).
Item = tuple[str, Prediction | Feedback, Position]


@dataclass(slots=True)
class _Part:
    """Events written in one transaction, with dead letters that go with them."""

    items: list[Item]
    dead_letters: list[DeadLetter]


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
        max_future_skew: float = math.inf,
        clock: Callable[[], float] = time.monotonic,
        store_process: StoreProcess | None = None,
    ) -> None:
        self.engine = engine
        # Where transactions run: a child process, or (None) this process's engine.
        self.store_process = store_process
        self.specs = specs  # rollup specs of the configuration (None: built-in defaults)
        self.predictions_topic = predictions_topic
        self.feedback_topic = feedback_topic
        self.max_message_bytes = max_message_bytes
        self.payload_limit = payload_limit
        self.max_future_skew = max_future_skew
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.on_db_error = on_db_error  # called on every failed attempt, whatever the error
        self.clock = clock
        self.statistics = PartitionAnalyzer()
        # Read by the status line: since when the store is unreachable (connection
        # failures only), and the last failure of any kind (None after a success).
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self.parse_seconds = 0.0
        self._busy_lock = threading.Lock()
        self._busy_done = 0.0  # parsing and writing, finished spells
        self._busy_from: float | None = None  # start of the current spell
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="ingest-writer", daemon=True)

    @property
    def busy_seconds(self) -> float:
        return self.busy_total()

    def busy_total(self) -> float:
        """Seconds spent parsing and writing so far, the spell in progress included.

        Sampled at each status line, so a long write counts in every interval it
        spans, never more than the interval (backoff waits are not busy).
        """
        with self._busy_lock:
            now = self.clock()
            current = 0.0 if self._busy_from is None else max(0.0, now - self._busy_from)
            return self._busy_done + current

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        with self._busy_lock:
            self._busy_from = self.clock()
        try:
            yield
        finally:
            with self._busy_lock:
                assert self._busy_from is not None
                self._busy_done += max(0.0, self.clock() - self._busy_from)
                self._busy_from = None

    def start(self) -> None:
        if self.store_process is not None:
            self.store_process.start()
        self._thread.start()

    def submit(self, job: Job) -> Job:
        self._queue.put(job)
        return job

    def stop(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
        if self.store_process is not None:
            self.store_process.stop()

    def process(self, job: Job) -> None:
        """Parse and store a job in the calling thread (what the writer thread does
        with a submitted one; `modelmon deadletters replay` calls it directly)."""
        try:
            self._process(job)
        finally:
            job.done.set()

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                self._process(job)
            except Exception as exc:  # never let the writer thread die silently
                log.exception("ingest writer failed on a batch")
                job.error = repr(exc)
            finally:
                job.done.set()

    def _process(self, job: Job) -> None:
        if job.cancelled.is_set():
            job.error = "cancelled"
            return
        if job.parsed is None:
            t_parse = time.perf_counter()
            with self._busy():
                job.parsed = parse_records(
                    job.batch.records, self.predictions_topic, self.feedback_topic,
                    self.max_message_bytes, self.payload_limit, self.max_future_skew,
                )
            self.parse_seconds += time.perf_counter() - t_parse
        started = time.perf_counter()
        outcome = self._store(job, job.parsed)
        if outcome is not None:
            job.duration = time.perf_counter() - started
            job.outcome = outcome

    def _store(self, job: Job, parsed: Parsed) -> BatchOutcome | None:
        """Write the batch, splitting what the store refuses; None if cancelled."""
        # Feedback first, as write_batch does, each in batch order: split parts are
        # written in this order, so the first of two versions of an event still wins
        # and a prediction still finds the label of feedback from its own batch.
        items: list[Item] = [("f", f, pos) for f, pos in parsed.feedback]
        items += [("p", p, pos) for p, pos in parsed.predictions]
        parts = deque([_Part(items, list(parsed.dead_letters))])
        letters: list[DeadLetter] = []  # written last, once the events are
        raw = {(r.topic, r.partition, r.offset): r.value for r in job.batch.records}
        total = BatchOutcome()
        delay = self.retry_initial
        split_logged = False
        while parts or letters:
            if not parts:
                parts.append(_Part([], letters))
                letters = []
            part = parts[0]
            job.attempts += 1
            try:
                with self._busy():
                    total.merge(self._write(part))
            except Exception as exc:
                error, failure = exc, classify(exc)
                if self.on_db_error is not None:
                    self.on_db_error()
                self.last_error = f"{failure.value}: {_short(exc)}"
            else:
                parts.popleft()
                delay = self.retry_initial
                self.last_error = None
                if self.failing_since is not None:
                    log.info("store reachable again after %.1f s; resuming",
                             time.monotonic() - self.failing_since)
                    self.failing_since = None
                continue
            if failure in (Failure.SPLIT, Failure.REJECT) and (
                len(part.items) > 1 or (part.items and part.dead_letters)
            ):
                parts.popleft()
                letters.extend(part.dead_letters)
                half = (len(part.items) + 1) // 2
                parts.extendleft(reversed([_Part(part.items[:half], []),
                                           _Part(part.items[half:], [])]))
                parts = deque(p for p in parts if p.items or p.dead_letters)
                # The first split of a batch is worth a warning; the rest follow from it.
                (log.debug if split_logged else log.warning)(
                    "the store refused %d events in one transaction (%s); writing them in "
                    "halves", len(part.items), _short(error))
                split_logged = True
                continue
            if failure is Failure.REJECT and part.items:
                parts.popleft()
                _, _, pos = part.items[0]
                job.rejected.append(pos)
                detail = f"the store rejected the event: {_short(error)}"
                letters.append(dead_letter("store_rejected", detail,
                                           raw.get((pos.topic, pos.partition, pos.offset)),
                                           pos, self.payload_limit))
                log.warning("the store rejected the event at %s[%d]@%d; dead-lettered (%s)",
                            pos.topic, pos.partition, pos.offset, _short(error))
                continue
            self._note_failure(error, failure, job, len(part.items), delay)
            if job.cancelled.wait(delay):
                job.error = "cancelled"
                return None
            delay = min(delay * 2, self.retry_max)
        return total

    def _note_failure(
        self, exc: BaseException, failure: Failure, job: Job, n: int, delay: float
    ) -> None:
        first = job.attempts <= 3
        if failure is Failure.CONNECTION:
            if self.failing_since is None:
                self.failing_since = time.monotonic()
                first = True
            what = "store unavailable"
        elif failure is Failure.REJECT:  # only dead letters left: a bug, or the schema
            log.error("could not store dead letters (%s)", _short(exc), exc_info=exc)
            what = "store refused the dead letters"
        else:
            what = "store cannot take the batch now"
        # One line per failure would flood the log during an outage: log the
        # first ones, then only when the backoff has grown.
        if first or delay >= self.retry_max:
            log.warning("%s (%s); offsets held back, retrying the same %d-event part of a "
                        "%d-message batch in %.1f s", what, _short(exc), n, len(job.batch), delay)

    def _write(self, part: _Part) -> BatchOutcome:
        preds = [(ev, pos) for kind, ev, pos in part.items if kind == "p"]
        fbs = [(ev, pos) for kind, ev, pos in part.items if kind == "f"]
        if self.store_process is not None:  # the same transaction, in the child
            return self.store_process.write(preds, fbs, part.dead_letters)  # type: ignore[arg-type]
        with self.engine.begin() as conn:
            out = write_batch(conn, preds, fbs, part.dead_letters, specs=self.specs)  # type: ignore[arg-type]
        # Committed: keep the planner's picture of the partitions it filled current.
        self.statistics.stored(self.engine, (p.ts for p in out.stored_predictions))
        return out
