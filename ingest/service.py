"""The ingest loop: Kafka consumer group -> batches -> store -> offset commits.

Guarantees, and how they are kept:
  * nothing lost: offsets (last processed + 1 per partition) are committed only
    after the batch's database transaction committed; a crash re-reads from the
    last commit;
  * nothing twice: writes are idempotent (see modelmon.store.writes), so the
    re-read after a crash, a rebalance or an outage stores nothing again;
  * a bad message never stops ingest: it becomes a dead letter with its reason;
  * database unreachable: the batch stays in memory and is retried with bounded
    backoff; polling stops (partitions paused) but the consumer keeps calling
    poll so the group does not evict it; offsets stay uncommitted meanwhile;
  * memory bounded: a batch holds at most `ingest.batch_max_events` messages and
    `ingest.batch_max_bytes` of values; records a poll returned beyond that wait
    in a spill, and nothing more is fetched while a full batch waits;
  * a stall shows: `stalled_for()` (and the gauge
    `modelmon_ingest_batch_pending_seconds`) is the age of the oldest batch not
    committed yet, and the lag counts the messages held back in memory.

  * a broken producer does not turn a partition into dead letters: past
    `ingest.dead_letter_limit_share` bad messages among a partition's last
    `ingest.dead_letter_limit_messages`, that partition halts (paused, nothing
    committed past the message that tripped the limit) until a restart
    (modelmon.ingest.deadletter_limit).

Both cores work: this loop fetches, decodes and validates (parse_records) batch
N+1 while the writer thread stores batch N; at most MAX_IN_FLIGHT parsed
batches wait for the writer, and beyond that partitions are paused (memory stays
bounded, never a growing queue). Batches are written and committed in order.
With `ingest.write_process` the writer thread runs each transaction in a
child process (modelmon.ingest.store_process), so the two do not share a GIL.

The Kafka library sits behind `consumer_base.Consumer` (`kafka.client`:
kafka-python or confluent-kafka), so these guarantees are written once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable

import sqlalchemy as sa
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from modelmon.config import Config
from modelmon.ingest.batch import Batch, parse_records
from modelmon.ingest.consumer_base import Consumer, ConsumerError, make_consumer
from modelmon.ingest.consumer_kafka_python import consumer_settings as consumer_settings
from modelmon.ingest.deadletter_limit import DeadLetterLimit, cut
from modelmon.ingest.kafka_logs import summarised_broker_logs
from modelmon.ingest.metrics import IngestMetrics
from modelmon.ingest.store_process import store_process_for
from modelmon.ingest.writer import BatchWriter, Job
from modelmon.store.rollups import Specs

log = logging.getLogger(__name__)

# Poll at least this often while paused, well inside max_poll_interval_ms.
KEEPALIVE_SECONDS = 2.0
# How long a rebalance or a shutdown waits for the batch being written.
REVOKE_GRACE_SECONDS = 10.0
SHUTDOWN_GRACE_SECONDS = 20.0
# Parsed batches handed to the writer and not committed yet: one being written, one
# waiting, so the writer never waits for this loop to parse.
MAX_IN_FLIGHT = 2


class IngestService:
    """Embeddable ingest: `run(stop_event)` blocks until the event is set."""

    def __init__(self, cfg: Config, engine: sa.Engine, metrics: IngestMetrics | None = None) -> None:
        self.cfg = cfg
        self.engine = engine
        self.metrics = metrics
        ing = cfg.ingest
        self.max_events = ing.batch_max_events
        self.max_age = ing.batch_max_age
        self.max_bytes = ing.batch_max_bytes
        self.writer = BatchWriter(
            engine, cfg.kafka.predictions_topic, cfg.kafka.feedback_topic,
            ing.max_message_bytes, ing.dead_letter_payload_bytes,
            ing.db_retry_initial, ing.db_retry_max,
            on_db_error=metrics.db_errors.inc if metrics else None,
            specs=Specs(cfg), max_future_skew=ing.max_future_skew,
            store_process=store_process_for(cfg, engine),
        )
        self.limit = DeadLetterLimit(ing.dead_letter_limit_share, ing.dead_letter_limit_messages)
        self.consumer: Consumer | None = None
        self.open = Batch()
        # Records a poll returned that did not fit in the open batch; while there are
        # any, the open batch is full and nothing more is fetched.
        self.spill = Batch()
        # Batches handed to the writer, oldest first (at most MAX_IN_FLIGHT).
        self.jobs: deque[Job] = deque()
        self.generation = 0
        self.paused = False
        self.last_poll = 0.0
        # Partitions stopped by the dead-letter limit -> the offset not committed past.
        self.halted: dict[TopicPartition, int] = {}
        # Totals since start, for the status line and for tests.
        self.stored = 0
        self.dead_lettered = 0
        self.duplicates = 0
        self.conflicts = 0
        self.batches = 0
        self.parse_seconds = 0.0
        self.committed: dict[TopicPartition, int] = {}
        self._status_at = time.monotonic()
        self._status_stored = 0
        self._lag_at = 0.0
        self._status_busy = 0.0
        self.ready = threading.Event()  # set once the consumer has joined the group
        if metrics is not None:
            metrics.watch_pending(self.stalled_for)

    @property
    def inflight(self) -> Job | None:
        """The oldest batch handed to the writer and not committed yet."""
        jobs = tuple(self.jobs)
        return jobs[0] if jobs else None

    # -- lifecycle ---------------------------------------------------------

    def run(self, stop_event: threading.Event) -> None:
        # kafka-python logs every failed connection attempt; say it once per period instead.
        with summarised_broker_logs(self.cfg.kafka.bootstrap_servers):
            self._run(stop_event)

    def _run(self, stop_event: threading.Event) -> None:
        consumer = self._connect(stop_event)
        if consumer is None:
            return
        self.consumer = consumer
        self.writer.start()
        try:
            consumer.subscribe(
                [self.cfg.kafka.predictions_topic, self.cfg.kafka.feedback_topic],
                on_assigned=self._on_assigned, on_revoked=self._on_revoked,
            )
            while not stop_event.is_set():
                self._step()
                self._maybe_status()
            self._shutdown()
        finally:
            self.writer.stop()
            try:
                consumer.close()
            except Exception:  # closing must not mask the real error
                log.debug("error closing the Kafka consumer", exc_info=True)
            self._log_status(final=True)

    def _connect(self, stop_event: threading.Event) -> Consumer | None:
        delay = self.cfg.ingest.db_retry_initial
        while not stop_event.is_set():
            try:
                return make_consumer(self.cfg)
            except KafkaError:
                log.warning("no Kafka broker reachable at %s; retrying in %.1f s",
                            self.cfg.kafka.bootstrap_servers, delay)
            stop_event.wait(delay)
            delay = min(delay * 2, self.cfg.ingest.db_retry_max)
        return None

    def _shutdown(self) -> None:
        """Flush: wait for the batches being written, write the open one, commit them all."""
        deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
        while self.jobs and time.monotonic() < deadline:
            self._wait_and_reap(deadline)
        while not self.jobs and self.open.records and time.monotonic() < deadline:
            self._submit()  # the spill follows into the next open batch
            self._wait_and_reap(deadline)
        if self.jobs:
            held = sum(len(j.batch) for j in self.jobs) + len(self.open) + len(self.spill)
            for job in self.jobs:
                job.cancelled.set()
            log.warning(
                "could not store the last batches within %.0f s; their %d messages were not "
                "committed and will be read again on restart", SHUTDOWN_GRACE_SECONDS, held,
            )

    def _wait_and_reap(self, deadline: float) -> None:
        if not self.jobs:
            return
        self.jobs[0].done.wait(max(0.0, deadline - time.monotonic()))
        self._reap()

    # -- the loop ----------------------------------------------------------

    def _step(self) -> None:
        self._reap()
        while len(self.jobs) < MAX_IN_FLIGHT and self._full_or_due():
            self._submit()
        self._maybe_lag()
        consumer = self.consumer
        assert consumer is not None
        room = self.max_events - len(self.open)
        if room <= 0 or self.spill.records or self.open.nbytes >= self.max_bytes:
            # Open batch full and the writer's queue too (one written, one waiting):
            # stop fetching (fetches are sent only by poll), but keep polling now and
            # then, partitions paused, so the group keeps us. Pausing only then: a
            # fetch that lands for a paused partition is thrown away and read again.
            assert self.jobs
            if time.monotonic() - self.last_poll >= KEEPALIVE_SECONDS:
                self._pause()
                self._poll(0)
            else:
                self.jobs[0].done.wait(0.05)
            return
        if self.paused:
            self._resume()
        timeout = 0.5
        if self.open.records:
            timeout = max(0.0, min(timeout, self.max_age - self.open.age()))
        if self.jobs:
            timeout = min(timeout, 0.05)
        self._poll(timeout, room)

    def _full_or_due(self) -> bool:
        return bool(self.spill.records) or self.open.is_due(
            self.max_events, self.max_age, self.max_bytes
        )

    def _poll(self, timeout: float, max_records: int | None = None) -> None:
        assert self.consumer is not None
        records = self.consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        self.last_poll = time.monotonic()
        if records and not self.ready.is_set():
            self.ready.set()
        for tp, recs in records.items():
            if tp in self.halted:
                continue  # fetched before the pause: stays in Kafka, uncommitted
            # Once a record did not fit, everything after it waits in the spill.
            taken = 0 if self.spill.records else self.open.take(
                tp, recs, self.max_events, self.max_bytes
            )
            self.spill.add(tp, recs[taken:])
        if not self.ready.is_set() and self.consumer.assignment():
            self.ready.set()

    def _submit(self) -> None:
        """Close the open batch, decode and validate it here, hand it to the writer."""
        batch = self.open
        self.open = Batch()
        started = time.perf_counter()
        ing, k = self.cfg.ingest, self.cfg.kafka
        parsed = parse_records(batch.records, k.predictions_topic, k.feedback_topic,
                               ing.max_message_bytes, ing.dead_letter_payload_bytes,
                               ing.max_future_skew)
        trips = self.limit.check(batch.records, parsed.dead_letters)
        if trips:
            batch, parsed = cut(batch, parsed, trips)
        self.parse_seconds += time.perf_counter() - started
        if batch.records:
            job = Job(batch=batch, generation=self.generation, parsed=parsed)
            self.jobs.append(self.writer.submit(job))
        for tp, last in trips.items():
            self._halt(tp, last)
        if self.spill.records:
            self._unspill()

    def _halt(self, tp: TopicPartition, last: int) -> None:
        """Stop reading a partition at `last` (the message that tripped the limit)."""
        self.halted[tp] = last + 1
        self.open = self.open.without([tp])
        self.spill = self.spill.without([tp])
        if self.consumer is not None:
            self.consumer.pause(tp)
        if self.metrics is not None:
            self.metrics.set_halted(tp.topic, tp.partition, True)
        log.error(
            "dead-letter limit: more than %.0f%% of the last %d messages of %s[%d] are bad "
            "(up to offset %d); that partition is HALTED, nothing after offset %d is "
            "committed. Fix the producer, then restart ingest (see the runbook "
            "ModelmonIngestHalted)",
            100 * self.limit.share, self.limit.window, tp.topic, tp.partition, last, last,
        )

    def _unspill(self) -> None:
        """Move what fits of the spill into the (new, empty) open batch, in order."""
        spill, self.spill = self.spill, Batch()
        rest = len(spill.records)
        for n, r in enumerate(spill.records):
            if not self.open.take(TopicPartition(r.topic, r.partition), [r],
                                  self.max_events, self.max_bytes):
                rest = n
                break
        for r in spill.records[rest:]:
            self.spill.add(TopicPartition(r.topic, r.partition), [r])
        # Received when the spill was: their age (pending, batch_max_age) counts from then.
        self.open.opened_at = spill.opened_at
        if self.spill.records:
            self.spill.opened_at = spill.opened_at

    def _reap(self) -> None:
        """Commit the batches the writer finished, in order, up to the first unfinished."""
        while self.jobs and self.jobs[0].done.is_set():
            job = self.jobs.popleft()
            if job.outcome is None:
                if job.cancelled.is_set():
                    continue  # offsets stay uncommitted: the records are read again
                # Committing later batches would skip this one: stop instead; a restart
                # re-reads from the last commit.
                raise RuntimeError(f"the ingest writer failed on a batch: {job.error}")
            if job.generation == self.generation:
                self._commit(job.batch.next_offsets)
            self._account(job)

    def _maybe_lag(self) -> None:
        """Refresh the lag gauge about once a second, progress or not."""
        if self.metrics is not None and time.monotonic() - self._lag_at >= 1.0:
            self._lag_at = time.monotonic()
            for tp, n in self.lag().items():
                self.metrics.set_lag(tp.topic, tp.partition, n)

    def _commit(self, offsets: dict[TopicPartition, int], wait: bool = True) -> None:
        assert self.consumer is not None
        if not offsets:
            return
        if wait:
            try:
                self.consumer.commit(offsets)
                self.committed.update(offsets)
            except ConsumerError as exc:
                # A rebalance took the partitions: the new owner re-reads from the
                # last commit and the idempotent writes make that harmless.
                log.warning("offset commit failed (%s); those messages will be re-read", exc)
        else:
            self.consumer.commit_async(offsets, self._on_async_commit)

    def _on_async_commit(
        self, offsets: dict[TopicPartition, int], error: BaseException | None
    ) -> None:
        if error is not None:
            log.warning("offset commit failed (%s); those messages will be re-read", error)
        else:
            self.committed.update(offsets)

    def _account(self, job: Job) -> None:
        out = job.outcome
        assert out is not None and job.parsed is not None
        self.batches += 1
        self.stored += out.predictions_stored + out.feedback_stored
        self.dead_lettered += out.dead_letters_stored
        self.duplicates += out.duplicates
        self.conflicts += out.conflicts
        m = self.metrics
        if m is None:
            return
        m.observe_predictions(out.stored_predictions, self.cfg.kafka.predictions_topic)
        m.observe_feedback(out.stored_feedback, self.cfg.kafka.feedback_topic)
        for reason, n in out.dead_letter_reasons.items():
            m.dead_letters.labels(reason).inc(n)
        m.observe_outcome_counts(out.duplicates_by_kind, out.conflicts_by_kind)
        m.batch_size.observe(len(job.batch))
        m.batch_duration.observe(job.duration)

    def _pause(self) -> None:
        assert self.consumer is not None
        if not self.paused:
            self.consumer.pause(*self.consumer.assignment())
            self.paused = True

    def _resume(self) -> None:
        assert self.consumer is not None
        self.consumer.resume(*(tp for tp in self.consumer.paused() if tp not in self.halted))
        self.paused = False

    # -- rebalances --------------------------------------------------------

    def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Finish (or give up) the batches being written, drop what the new owner will read."""
        assert self.consumer is not None
        self.generation += 1
        deadline = time.monotonic() + REVOKE_GRACE_SECONDS
        given_up: list[Job] = []
        while self.jobs:
            job = self.jobs.popleft()
            if given_up or not job.done.wait(max(0.0, deadline - time.monotonic())):
                job.cancelled.set()  # and every later one: committing it would skip this
                given_up.append(job)
            elif job.outcome is not None:
                # kafka-python >= 3 calls this on its IO thread, where a blocking call
                # raises (and would fail the rebalance): commit asynchronously there.
                # Should that commit be lost, the new owner re-reads the batch and the
                # idempotent writes store nothing twice.
                self._commit(job.batch.next_offsets, wait=self.consumer.callbacks_may_block)
                self._account(job)
            elif not job.cancelled.is_set():
                given_up.append(job)  # the writer failed on it: read it again
        if given_up:
            # A batch being written was given up: every partition we keep must be
            # read again from that batch's first offsets.
            self._rewind(*(j.batch for j in given_up), self.open, self.spill)
            self.open, self.spill = Batch(), Batch()
        else:
            self.open = self.open.without(revoked)
            self.spill = self.spill.without(revoked)
        self.paused = False
        self.limit.forget(revoked)
        for tp in revoked:
            self.halted.pop(tp, None)
        if self.metrics is not None:
            for tp in revoked:
                self.metrics.forget_partition(tp.topic, tp.partition)
        log.info("partitions revoked: %s", _tps(revoked))

    def _rewind(self, *batches: Batch) -> None:
        assert self.consumer is not None
        first: dict[TopicPartition, int] = {}
        for b in batches:
            for tp, off in b.first_offsets.items():
                first[tp] = min(off, first.get(tp, off))
        for tp, off in first.items():
            # Not assigned any more: the new owner reads from the commit.
            with contextlib.suppress(ConsumerError):
                self.consumer.seek(tp, off)

    def _on_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", _tps(assigned))
        kept_halted = [tp for tp in assigned if tp in self.halted]
        if kept_halted and self.consumer is not None:
            self.consumer.pause(*kept_halted)
        if assigned:
            self.ready.set()

    # -- status ------------------------------------------------------------

    def lag(self) -> dict[TopicPartition, int]:
        """Messages not committed yet, per assigned partition.

        From the oldest message held back in memory (in the batch being written,
        the open batch or the spill; without any, the consumer position) to the
        high watermark of the last fetch: a batch the store does not take shows
        as lag. (Tansu's end_offsets read too low after batched writes, so the
        fetch's high watermark it is.)
        """
        consumer = self.consumer
        out: dict[TopicPartition, int] = {}
        if consumer is None:
            return out
        held = self._held_first_offsets()
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is None:
                continue
            start = held.get(tp)
            if start is None:
                try:
                    start = consumer.position(tp, timeout_ms=100)
                except ConsumerError:
                    continue
            if start is None:
                continue
            out[tp] = max(0, hw - start)
        return out

    def _held_first_offsets(self) -> dict[TopicPartition, int]:
        batches = [self.open, self.spill] + [job.batch for job in tuple(self.jobs)]
        first: dict[TopicPartition, int] = {}
        for b in batches:
            for tp, off in b.first_offsets.items():
                first[tp] = min(off, first.get(tp, off))
        return first

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds the oldest batch received has waited without being committed (0.0: none).

        Under load this stays near batch_max_age plus one write; it grows while
        the writer makes no progress (store down, or a batch it cannot store).
        Called from other threads (/healthz, the metrics scrape): reads only.
        """
        batches = [self.open, self.spill] + [job.batch for job in tuple(self.jobs)]
        starts = [b.opened_at for b in batches if b.opened_at is not None and b.records]
        if not starts:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - min(starts))

    def _maybe_status(self) -> None:
        if time.monotonic() - self._status_at >= self.cfg.ingest.status_interval:
            self._log_status()

    def _log_status(self, final: bool = False) -> None:
        now = time.monotonic()
        elapsed = max(now - self._status_at, 1e-9)
        rate = (self.stored - self._status_stored) / elapsed
        busy_total = self.writer.busy_total()
        busy = min(1.0, (busy_total - self._status_busy) / elapsed)
        self._status_at, self._status_stored = now, self.stored
        self._status_busy = busy_total
        lag = self.lag() if not final else {}
        if self.metrics is not None:
            for tp, n in lag.items():
                self.metrics.set_lag(tp.topic, tp.partition, n)
        db = "ok"
        pending = self.stalled_for(now)
        if self.writer.failing_since is not None:
            db = f"UNREACHABLE for {now - self.writer.failing_since:.0f}s, offsets held back"
        elif pending >= self.cfg.ingest.stall_after:
            # Reachable, but nothing committed: a write that hangs, or one that keeps failing.
            db = f"STALLED: oldest batch uncommitted for {pending:.0f}s, offsets held back"
            if self.writer.last_error:
                db += f" (last error: {self.writer.last_error})"
        log.info(
            "ingest%s: %.0f events/s, stored %d, lag %s, dead letters %d, duplicates %d, "
            "conflicts %d, batches %d, writer busy %.0f%%, store %s",
            " stopped" if final else "", rate, self.stored,
            sum(lag.values()) if lag else "n/a", self.dead_lettered, self.duplicates,
            self.conflicts, self.batches, 100 * busy, db,
        )
        if self.halted:
            log.error("ingest: partitions HALTED by the dead-letter limit: %s (restart ingest "
                      "once the producer is fixed)", _tps(self.halted))


def _tps(tps: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(tps)) or "none"
