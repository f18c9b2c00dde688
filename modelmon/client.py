"""Client for model services: log predictions and feedback to Kafka.

Built for the request path of a model server: `log_prediction` validates the
event against the contract, serialises it and hands it to a background thread
through a bounded queue, then returns. It never raises and never waits on
Kafka; anything that cannot be sent (invalid event, queue full, broker
unreachable, delivery failure) is dropped, counted in `client.dropped` by
reason and logged at most once per `log_interval` seconds.

`close(timeout)` returns within `timeout` seconds whatever the broker does:
events not acknowledged by then (still queued, or sent but unacknowledged) are
counted in `client.dropped["undelivered"]` and reported in one log line.
kafka-python's own log records from the client's threads (connection errors
while the broker is down) are kept out of the host's log unless
`kafka_logs=True`; the client says what matters in its own lines.

    from modelmon.client import ModelmonClient
    client = ModelmonClient("kafka:9092")
    client.log_prediction(request_id=rid, model="fraud", prediction=1,
                          scores={"0": 0.1, "1": 0.9}, latency_ms=12.5,
                          slices={"region": "eu"})
    ...
    client.log_feedback(request_id=rid, model="fraud", label=0)
    client.close()

Feedback over HTTP instead of Kafka: see `modelmon.client_http.send_feedback_http`.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import threading
import time
from collections import Counter, deque
from typing import Any

from modelmon.client_http import FeedbackHTTPError, send_feedback_http  # noqa: F401 (re-export)
from modelmon.contract import ContractError, parse_feedback, parse_prediction

log = logging.getLogger(__name__)

DEFAULT_PREDICTIONS_TOPIC = "modelmon.predictions"
DEFAULT_FEEDBACK_TOPIC = "modelmon.feedback"
_NUMBER = itertools.count(1)


class _ThreadScopedFilter(logging.Filter):
    """Drops kafka-python records logged from the given threads (one client's), so a
    host that logs kafka-python itself (its own consumer) keeps seeing its own."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName not in self.threads

    def silence(self, *names: str) -> None:
        """Drop the records of these threads from now on. Never undone: a client's
        producer threads may outlive close() by a moment, and their names belong
        to modelmon clients (numbered, or named after the client id)."""
        with self._lock:
            self.threads = self.threads | set(names)  # replaced whole: filter() reads lock-free
        for lg in _kafka_loggers():
            if self not in lg.filters:
                lg.addFilter(self)


def _kafka_loggers() -> list[logging.Logger]:
    """kafka-python's loggers (its modules create them on import; a filter on a
    logger only sees records logged on it, so each gets the filter)."""
    import kafka  # noqa: F401

    names = [n for n in logging.Logger.manager.loggerDict if n == "kafka" or n.startswith("kafka.")]
    return [logging.getLogger(n) for n in names]


_KAFKA_LOG_FILTER = _ThreadScopedFilter()


class ModelmonClient:
    """Non-blocking producer of modelmon events. Thread-safe."""

    def __init__(
        self,
        bootstrap_servers: str | list[str],
        predictions_topic: str = DEFAULT_PREDICTIONS_TOPIC,
        feedback_topic: str = DEFAULT_FEEDBACK_TOPIC,
        *,
        max_queued: int = 100_000,
        max_in_flight: int = 100_000,
        log_interval: float = 60.0,
        kafka_logs: bool = False,
        **kafka_config: Any,
    ) -> None:
        """`kafka_config` goes to kafka-python's KafkaProducer (security settings, acks, ...).

        `kafka_logs=True` lets kafka-python's own log records from this client's
        threads through to the host's logging (by default they are dropped).
        """
        self.predictions_topic = predictions_topic
        self.feedback_topic = feedback_topic
        self.dropped: Counter[str] = Counter()
        self.sent = 0  # acknowledged by the broker
        self.log_interval = log_interval
        self._max_queued = max_queued
        self._max_in_flight = max_in_flight
        # One lock for the queue and the delivery accounting: every accepted event
        # ends exactly once, as `sent` or as a drop, and close() settles the rest.
        self._cond = threading.Condition()
        self._pending: deque[tuple[str, bytes, bytes]] = deque()
        self._in_flight = 0
        self._closed = False  # no new events accepted
        self._stopping = threading.Event()  # the sender thread stops taking events
        self._settled = False  # close() counted what is left: callbacks are ignored
        self._deadline: float | None = None  # close()'s, for the producer's own close
        self._last_log = 0.0
        self._unlogged: Counter[str] = Counter()
        self._last_detail = ""
        self._log_lock = threading.Lock()
        settings: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "linger_ms": 50,
            "batch_size": 256 * 1024,
            "acks": 1,
            "enable_idempotence": False,  # needs acks=all; duplicates are harmless downstream
            "retries": 5,
            "max_block_ms": 5_000,  # only the background thread ever blocks
            "bootstrap_timeout_ms": 5_000,  # a constructor attempt; retried with backoff
            "delivery_timeout_ms": 120_000,
            "client_id": "modelmon-client",
        }
        settings.update(kafka_config)
        self._settings = settings
        self._producer: Any = None
        name = f"modelmon-client-{next(_NUMBER)}"
        client_id = str(settings["client_id"])
        # kafka-python logs from the thread that builds the producer (ours) and from
        # the producer's network and IO threads, named after the client id.
        self._log_threads = (name, f"{client_id}-network-thread", f"kafka-io-{client_id}")
        if not kafka_logs:
            _KAFKA_LOG_FILTER.silence(*self._log_threads)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- the caller's side ----------------------------------------------------

    def log_prediction(
        self,
        *,
        request_id: str,
        model: str,
        prediction: str | int | bool,
        timestamp: float | str | None = None,
        model_version: str | None = None,
        scores: dict[str, float] | None = None,
        latency_ms: float | None = None,
        status: str | None = None,
        slices: dict[str, str] | None = None,
        features: dict[str, Any] | None = None,
    ) -> bool:
        """Queue one prediction log; False if it was dropped. `timestamp` defaults to now."""
        event: dict[str, Any] = {
            "request_id": request_id,
            "model": model,
            "timestamp": time.time() if timestamp is None else timestamp,
            "prediction": prediction,
        }
        optional = {
            "model_version": model_version, "scores": scores, "latency_ms": latency_ms,
            "status": status, "slices": slices, "features": features,
        }
        event.update({k: v for k, v in optional.items() if v is not None})
        return self._enqueue(self.predictions_topic, event, parse_prediction)

    def log_feedback(
        self,
        *,
        request_id: str,
        model: str,
        label: str | int | bool,
        timestamp: float | str | None = None,
    ) -> bool:
        """Queue one feedback event (the true label); False if it was dropped."""
        event = {
            "request_id": request_id,
            "model": model,
            "label": label,
            "timestamp": time.time() if timestamp is None else timestamp,
        }
        return self._enqueue(self.feedback_topic, event, parse_feedback)

    # (HTTP feedback lives in modelmon.client_http.send_feedback_http.)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is acknowledged (or dropped); True if so."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending or self._in_flight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.05 if remaining is None else min(0.05, remaining))
            return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Deliver what is queued for at most `timeout` seconds (None: until done), then stop.

        Returns within `timeout` (plus a few milliseconds) whatever the broker
        does. Events not acknowledged by then, still queued or sent without an
        acknowledgement, are counted in `dropped["undelivered"]`, and one line
        reports every drop not logged yet. A producer that does not finish within
        the time is left to its daemon threads, its deliveries no longer counted.
        """
        if self._closed:
            return
        deadline = math.inf if timeout is None else time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._closed = True  # from now on log_* drops ("closed")
        self.flush(None if timeout is None else max(0.0, deadline - time.monotonic()))
        self._deadline = deadline
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(None if timeout is None else max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._settled = True
            undelivered = len(self._pending) + self._in_flight
            self._pending.clear()
            self._in_flight = 0
            self._cond.notify_all()
        if undelivered:
            with self._log_lock:
                self.dropped["undelivered"] += undelivered
                self._unlogged["undelivered"] += undelivered
        self._log_drops(force=True, closing=undelivered)

    def __enter__(self) -> ModelmonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _enqueue(self, topic: str, event: dict[str, Any], validate: Any) -> bool:
        try:
            if self._closed:
                return self._drop("closed")
            try:
                validate(event)
                value = json.dumps(event, separators=(",", ":"), allow_nan=False).encode()
            except ContractError as exc:
                return self._drop(exc.reason, exc.detail)
            except (TypeError, ValueError) as exc:
                return self._drop("not_serialisable", str(exc))
            with self._cond:
                if self._closed:
                    full = "closed"
                elif len(self._pending) >= self._max_queued:
                    full = "queue_full"
                else:
                    self._pending.append((topic, str(event["request_id"]).encode(), value))
                    self._cond.notify_all()
                    return True
            return self._drop(full)
        except Exception as exc:  # the request path must never see our failures
            return self._drop("internal_error", repr(exc))

    def _drop(self, reason: str, detail: str = "") -> bool:
        with self._log_lock:
            self.dropped[reason] += 1
            self._unlogged[reason] += 1
            if detail:
                self._last_detail = detail
        self._log_drops()
        return False

    def _log_drops(self, force: bool = False, closing: int | None = None) -> None:
        now = time.monotonic()
        with self._log_lock:
            if not self._unlogged or (not force and now - self._last_log < self.log_interval):
                return
            counts, self._unlogged = dict(self._unlogged), Counter()
            self._last_log = now
            detail = self._last_detail
        last = f" (last problem: {detail[:300]})" if detail else ""
        if closing:
            log.warning("modelmon client closed with %d events not delivered to Kafka; "
                        "dropped: %s%s", closing, counts, last)
        else:
            log.warning("modelmon client dropped events: %s%s", counts, last)

    # -- the background thread ----------------------------------------------

    def _connect(self) -> Any:
        """A KafkaProducer, retried with backoff until close(); None if closed first.

        kafka-python's constructor bootstraps eagerly and blocks up to
        `bootstrap_timeout_ms`: close() does not wait for it (the thread is a
        daemon), and a producer finished after close() is closed at once.
        """
        from kafka import KafkaProducer

        delay, warned = 0.5, False
        while not self._stopping.is_set():
            try:
                producer = KafkaProducer(**self._settings)
            except Exception as exc:  # no broker yet: keep the queue, retry
                if not warned:
                    log.warning("modelmon client cannot reach Kafka at %s (%s); events are queued "
                                "(up to %d) and retried", self._settings["bootstrap_servers"],
                                exc, self._max_queued)
                    warned = True
                self._stopping.wait(delay)
                delay = min(delay * 2, 30.0)
                continue
            if self._stopping.is_set():
                self._close_producer(producer)
                return None
            if warned:
                log.info("modelmon client connected to Kafka at %s", self._settings["bootstrap_servers"])
            return producer
        return None

    def _run(self) -> None:
        self._producer = self._connect()
        if self._producer is None:
            return
        try:
            while True:
                with self._cond:
                    while not self._stopping.is_set() and (
                        not self._pending or self._in_flight >= self._max_in_flight
                    ):
                        self._cond.wait(0.1)
                    if self._stopping.is_set():
                        break
                    item = self._pending.popleft()
                    self._in_flight += 1
                self._send(*item)
        finally:
            self._close_producer(self._producer)

    def _close_producer(self, producer: Any) -> None:
        """Close within what is left of close()'s time. kafka-python's close(t) may
        take 2t (a flush, then a join of its sender), then aborts what is left
        (their errbacks count the drops, or close() settles them)."""
        deadline = time.monotonic() if self._deadline is None else self._deadline
        left = max(0.0, deadline - time.monotonic())
        try:
            producer.close(timeout=None if math.isinf(left) else left / 2)
        except Exception:
            log.debug("error closing the Kafka producer", exc_info=True)

    def _send(self, topic: str, key: bytes, value: bytes) -> None:
        try:
            future = self._producer.send(topic, value=value, key=key)
        except Exception as exc:
            self._resolve(None, repr(exc))
            return
        future.add_callback(self._on_ack)
        future.add_errback(self._on_error)

    def _resolve(self, acked: bool | None, detail: str = "") -> None:
        """One in-flight event ends: acknowledged, or dropped as send_failed."""
        with self._cond:
            if self._settled:  # close() counted it as undelivered already
                return
            self._in_flight -= 1
            if acked:
                self.sent += 1
            self._cond.notify_all()
        if not acked:
            self._drop("send_failed", detail)

    def _on_ack(self, _metadata: Any) -> None:
        self._resolve(True)

    def _on_error(self, exc: BaseException) -> None:
        self._resolve(False, repr(exc))
