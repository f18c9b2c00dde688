"""Client for model services: log predictions and feedback to Kafka.

Built for the request path of a model server: `log_prediction` validates the
event against the contract, serialises it and hands it to a background thread
through a bounded queue, then returns. It never raises and never waits on
Kafka; anything that cannot be sent (invalid event, queue full, broker
unreachable, delivery failure) is dropped, counted in `client.dropped` by
reason and logged at most once per `log_interval` seconds.

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

import contextlib
import json
import logging
import queue
import threading
import time
from collections import Counter
from typing import Any

from modelmon.client_http import FeedbackHTTPError, send_feedback_http  # noqa: F401 (re-export)
from modelmon.contract import ContractError, parse_feedback, parse_prediction

log = logging.getLogger(__name__)

DEFAULT_PREDICTIONS_TOPIC = "modelmon.predictions"
DEFAULT_FEEDBACK_TOPIC = "modelmon.feedback"
_STOP = object()


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
        **kafka_config: Any,
    ) -> None:
        """`kafka_config` goes to kafka-python's KafkaProducer (security settings, acks, ...)."""
        self.predictions_topic = predictions_topic
        self.feedback_topic = feedback_topic
        self.dropped: Counter[str] = Counter()
        self.sent = 0  # acknowledged by the broker
        self.log_interval = log_interval
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._cond = threading.Condition()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queued)
        self._closed = False
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
            "delivery_timeout_ms": 120_000,
            "client_id": "modelmon-client",
        }
        settings.update(kafka_config)
        self._settings = settings
        self._producer: Any = None
        self._thread = threading.Thread(target=self._run, name="modelmon-client", daemon=True)
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
        while True:
            with self._cond:
                if self._queue.unfinished_tasks == 0 and self._in_flight == 0:
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.05 if remaining is None else min(0.05, remaining))

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush (bounded by `timeout`), then stop the background thread and the producer."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=1.0)
        self._thread.join(timeout)
        self._log_drops(force=True)

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
            try:
                self._queue.put_nowait((topic, str(event["request_id"]).encode(), value))
            except queue.Full:
                return self._drop("queue_full")
            return True
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

    def _log_drops(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._log_lock:
            if not self._unlogged or (not force and now - self._last_log < self.log_interval):
                return
            counts, self._unlogged = dict(self._unlogged), Counter()
            self._last_log = now
            detail = self._last_detail
        log.warning("modelmon client dropped events: %s%s", counts,
                    f" (last problem: {detail[:300]})" if detail else "")

    # -- the background thread ----------------------------------------------

    def _connect(self) -> Any:
        from kafka import KafkaProducer

        delay = 0.5
        while not self._closed:
            try:
                return KafkaProducer(**self._settings)
            except Exception as exc:  # no broker yet: keep the queue, retry
                log.warning("modelmon client cannot reach Kafka (%s); retrying in %.0f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        return None

    def _run(self) -> None:
        self._producer = self._connect()
        try:
            while True:
                item = self._queue.get()
                try:
                    if item is _STOP or self._producer is None:
                        if item is not _STOP:
                            self._drop("closed")
                            continue
                        break
                    self._send(*item)
                finally:
                    self._queue.task_done()
                    with self._cond:
                        self._cond.notify_all()
        finally:
            if self._producer is not None:
                try:
                    self._producer.flush(timeout=5)
                    self._producer.close(timeout=5)
                except Exception:
                    log.debug("error closing the Kafka producer", exc_info=True)
            # Whatever is still queued cannot be sent any more.
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    self._drop("closed")
                self._queue.task_done()
            with self._cond:
                self._cond.notify_all()

    def _send(self, topic: str, key: bytes, value: bytes) -> None:
        with self._cond:
            # Bound what the producer holds unacknowledged (kafka-python's own
            # buffer is unbounded); the queue in front then fills and drops.
            while self._in_flight >= self._max_in_flight and not self._closed:
                self._cond.wait(0.1)
            self._in_flight += 1
        try:
            future = self._producer.send(topic, value=value, key=key)
        except Exception as exc:
            self._done()
            self._drop("send_failed", repr(exc))
            return
        future.add_callback(self._on_ack)
        future.add_errback(self._on_error)

    def _done(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def _on_ack(self, _metadata: Any) -> None:
        self.sent += 1
        self._done()

    def _on_error(self, exc: BaseException) -> None:
        self._done()
        self._drop("send_failed", repr(exc))
