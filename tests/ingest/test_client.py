"""modelmon.client: validates, never raises into the caller, counts drops; real-broker round trip."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable

import pytest
from conftest import assert_no_duplicate_positions, count, make_config, running, wait_for

from modelmon.client import ModelmonClient
from modelmon.config import Config


@pytest.fixture
def offline_client() -> ModelmonClient:
    # Nothing listens on port 1: the producer never connects, the caller must not notice.
    client = ModelmonClient("127.0.0.1:1", bootstrap_timeout_ms=500, max_queued=5)
    yield client
    client.close(timeout=0.5)


def test_invalid_events_are_dropped_and_counted_never_raised(offline_client: ModelmonClient) -> None:
    c = offline_client
    assert c.log_prediction(request_id="r", model="bad model", prediction=1) is False
    assert c.log_prediction(request_id="r", model="m", prediction=0.5) is False
    assert c.log_prediction(request_id="r", model="m", prediction=1, latency_ms=-1) is False
    assert c.log_prediction(request_id="", model="m", prediction=1) is False
    assert c.log_feedback(request_id="r", model="m", label=None) is False  # type: ignore[arg-type]
    assert c.log_prediction(request_id="r", model="m", prediction=1,
                            features={"x": object()}) is False
    assert c.log_prediction(request_id="r", model="m", prediction=1,
                            features={"x": float("nan")}) is False
    assert c.dropped == {"invalid_value": 3, "wrong_type": 1, "missing_field": 1,
                         "not_serialisable": 2}


def test_full_queue_drops_instead_of_blocking(offline_client: ModelmonClient) -> None:
    started = time.monotonic()
    results = [offline_client.log_prediction(request_id=f"r{i}", model="m", prediction=1)
               for i in range(50)]
    assert time.monotonic() - started < 1.0
    assert results.count(True) <= 6  # queue of 5 (+1 taken by the sender thread)
    assert offline_client.dropped["queue_full"] == results.count(False) >= 44


def test_logging_after_close_is_a_counted_drop() -> None:
    client = ModelmonClient("127.0.0.1:1", bootstrap_timeout_ms=200)
    client.close(timeout=0.5)
    assert client.log_feedback(request_id="r", model="m", label=1) is False
    assert client.dropped["closed"] >= 1


def test_round_trip_through_the_broker_into_the_store(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], store, db_url: str
) -> None:
    preds_topic, fb_topic = kafka_topics("preds", 1), kafka_topics("fb", 1)
    with ModelmonClient(kafka_bootstrap, preds_topic, fb_topic) as client:
        for i in range(200):
            assert client.log_prediction(
                request_id=f"r{i}", model="fraud", prediction=i % 2, model_version="v1",
                scores={"1": 0.9 if i % 2 else 0.1}, latency_ms=5.0, slices={"region": "eu"},
                timestamp="2026-11-23T10:00:00Z",
            )
        for i in range(0, 200, 2):
            assert client.log_feedback(request_id=f"r{i}", model="fraud", label=True)
        assert client.flush(30)
        assert client.sent == 300 and not client.dropped
        started = time.monotonic()
    assert time.monotonic() - started < 2.0  # close() with nothing left to deliver
    assert client.sent == 300 and not client.dropped
    cfg = Config.model_validate(make_config(kafka_bootstrap, db_url, preds_topic, fb_topic,
                                            f"g-{preds_topic}"))
    with running(cfg, store) as service:
        wait_for(lambda: service.stored >= 300, 60, "client events stored")
    with store.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT request_id, prediction, label, model_version, slices FROM predictions"
        ).all()
    assert len(rows) == 200 and count(store, "feedback") == 100  # each event stored once
    assert_no_duplicate_positions(store)
    by_id = {r[0]: r for r in rows}
    assert by_id["r2"][1:4] == ("0", "1", "v1") and by_id["r3"][2] is None
    slices = by_id["r3"][4]
    assert (json.loads(slices) if isinstance(slices, str) else slices) == {"region": "eu"}


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_close_without_a_broker_keeps_its_timeout_and_counts_every_event_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """1,000 events, no broker: close(T) returns within T, all 1,000 are `dropped`
    (nothing listens, so nothing can have been delivered), one line says so, and no
    kafka-python record reaches the host's log."""
    caplog.set_level(logging.DEBUG)  # the host logs everything, kafka-python included
    client = ModelmonClient(f"127.0.0.1:{closed_port()}")  # the default settings
    n = 1000
    accepted = sum(client.log_prediction(request_id=f"r{i}", model="m", prediction=i % 2)
                   for i in range(n))
    assert accepted == n and not client.dropped
    time.sleep(1.0)  # the producer thread is now busy trying to bootstrap
    timeout = 2.0
    started = time.monotonic()
    client.close(timeout=timeout)
    elapsed = time.monotonic() - started
    assert elapsed <= timeout + 0.25, elapsed
    delivered = 0  # nothing listens on the port
    assert client.sent == delivered
    assert sum(client.dropped.values()) == n - delivered
    assert client.dropped == {"undelivered": n - delivered}
    lines = [r for r in caplog.records
             if r.name == "modelmon.client" and "not delivered" in r.getMessage()]
    assert len(lines) == 1 and f"{n - delivered} events not delivered" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.name.startswith("kafka")]
    # Only the client's own threads are silenced: the host's kafka-python logs still show.
    logging.getLogger("kafka.net.manager").warning("the host's own consumer")
    assert any(r.name == "kafka.net.manager" for r in caplog.records)
    time.sleep(0.5)
    assert client.log_prediction(request_id="late", model="m", prediction=1) is False
    assert client.dropped == {"undelivered": n, "closed": 1}  # nothing counted twice


def test_close_within_its_timeout_when_the_producer_is_stuck_sending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker that accepts connections and never answers: the events stay queued
    or unacknowledged, and close() still returns in time with all of them counted."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        client = ModelmonClient(f"127.0.0.1:{silent.getsockname()[1]}",
                                bootstrap_timeout_ms=60_000)
        for i in range(100):
            assert client.log_feedback(request_id=f"r{i}", model="m", label=1)
        time.sleep(0.5)
        started = time.monotonic()
        client.close(timeout=1.0)
        assert time.monotonic() - started <= 1.25
    assert client.sent == 0 and client.dropped == {"undelivered": 100}
