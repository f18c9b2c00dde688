"""Helpers for ingest tests: producing to the test broker, running ingest, reading the store."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import yaml
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from modelmon.config import Config
from modelmon.ingest.metrics import IngestMetrics, latency_buckets_for
from modelmon.ingest.service import IngestService
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade

T0 = 1_790_000_000.0
# Tansu takes about half the session timeout to complete a group join.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000,
              "max_poll_interval_ms": 20000}


# The Kafka client ingest runs with (kafka.client). Tests of these modules (ingest
# against the broker: exactly once, SIGKILL, rebalance, failures, limits) run with
# each client in INGEST_TEST_CLIENTS; the rest with kafka-python only.
BOTH_CLIENTS_MODULES = {"test_ingest_exactly_once", "test_ingest_failures",
                        "test_ingest_limits", "test_deadletter_limit"}
CLIENTS = os.environ.get("INGEST_TEST_CLIENTS", "kafka-python,confluent").split(",")
_client = ["kafka-python"]  # what make_config writes; set by the kafka_client fixture


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.module.__name__.rsplit(".", 1)[-1] in BOTH_CLIENTS_MODULES:
        metafunc.parametrize("kafka_client", CLIENTS, indirect=True)


@pytest.fixture(autouse=True)
def kafka_client(request: pytest.FixtureRequest) -> Iterator[str]:
    """The kafka.client of configurations made by make_config in this test."""
    _client[0] = getattr(request, "param", "kafka-python")
    yield _client[0]
    _client[0] = "kafka-python"


@dataclass
class Rec:
    """A consumed record as ingest reads it (kafka-python's ConsumerRecord fields it uses)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def producer(bootstrap: str, **extra: Any) -> KafkaProducer:
    settings = {"bootstrap_servers": bootstrap, "linger_ms": 20, "batch_size": 512 * 1024,
                "acks": 1, "enable_idempotence": False, "max_request_size": 4 * 1024 * 1024}
    settings.update(extra)
    return KafkaProducer(**settings)


def prediction(i: int, model: str = "m", **extra: Any) -> dict[str, Any]:
    return {"request_id": f"r{i}", "model": model, "timestamp": T0 + i, "prediction": i % 3,
            "scores": {"0": 0.2, "1": 0.3, "2": 0.5}, "latency_ms": i % 97,
            "slices": {"region": ("eu", "us")[i % 2]}, **extra}


def feedback(i: int, model: str = "m") -> dict[str, Any]:
    return {"request_id": f"r{i}", "model": model, "timestamp": T0 + i + 30, "label": label_of(i)}


def label_of(i: int) -> str:
    """The true label of prediction i; differs between neighbours so a mix-up shows."""
    return str((i * 7 + 1) % 3)


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def send_all(prod: KafkaProducer, topic: str, values: list[bytes | None],
             keys: list[bytes | None] | None = None) -> list[tuple[int, int]]:
    """Send and return each message's (partition, offset)."""
    futures = [prod.send(topic, value=v, key=None if keys is None else keys[n])
               for n, v in enumerate(values)]
    prod.flush()
    return [(md.partition, md.offset) for md in (f.get(timeout=30) for f in futures)]


def make_config(bootstrap: str, db_url: str, predictions_topic: str, feedback_topic: str,
                group: str, **ingest: Any) -> dict[str, Any]:
    return {
        "database": {"url": db_url},
        "kafka": {"bootstrap_servers": bootstrap, "predictions_topic": predictions_topic,
                  "feedback_topic": feedback_topic, "group_id": group, "consumer": FAST_GROUP,
                  "client": _client[0]},
        # http_port 0: `modelmon ingest` subprocesses of concurrent tests must not share a port.
        "ingest": {"batch_max_age": "200ms", "status_interval": "2s", "db_retry_initial": "200ms",
                   "db_retry_max": "2s", "http_port": 0, **ingest},
    }


def write_config(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "modelmon.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture
def store(db_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@contextmanager
def running(cfg: Config, engine: sa.Engine, metrics: IngestMetrics | None = None) -> Iterator[IngestService]:
    """IngestService in a thread; stopped (flush + commit) on exit."""
    service = IngestService(cfg, engine, metrics)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run(stop)
        except BaseException as exc:  # surfaced by the test below
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-ingest", daemon=True)
    thread.start()
    try:
        yield service
        assert thread.is_alive(), f"ingest exited early: {errors}"
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive(), "ingest did not stop within 60 s"
    assert not errors, errors


def pg_error(sqlstate: str, message: str = "boom") -> sa.exc.DBAPIError:
    """What SQLAlchemy raises for a psycopg error carrying this SQLSTATE."""
    orig = psycopg.errors.lookup(sqlstate)(message)
    return sa.exc.DBAPIError.instance("INSERT", {}, orig, psycopg.Error)


def new_metrics(cfg: Config) -> IngestMetrics:
    return IngestMetrics(CollectorRegistry(), latency_buckets_for(cfg))


def count(engine: sa.Engine, table: str, where: str = "") -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table} {where}")).scalar() or 0)


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        consumer.close(autocommit=False)


def expected_next_offsets(positions: list[tuple[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for partition, offset in positions:
        out[partition] = max(out.get(partition, 0), offset + 1)
    return out


def assert_labels_joined(engine: sa.Engine, expected_labelled: int) -> None:
    """Every stored feedback labels its own prediction, with that feedback's label and time.

    Checked in SQL (the join, not just counts) and against `label_of` (so a label
    joined to a neighbour's prediction shows).
    """
    with engine.connect() as conn:
        wrong = conn.execute(sa.text(
            "SELECT count(*) FROM predictions p JOIN feedback f "
            "ON f.model = p.model AND f.request_id = p.request_id "
            "WHERE p.label IS NULL OR p.label <> f.label OR p.label_ts <> f.ts"
        )).scalar()
        orphans = conn.execute(sa.text(
            "SELECT count(*) FROM predictions p WHERE p.label IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM feedback f WHERE f.model = p.model AND f.request_id = p.request_id)"
        )).scalar()
        rows = conn.execute(sa.text(
            "SELECT request_id, label FROM predictions WHERE label IS NOT NULL"
        )).all()
    assert wrong == 0, f"{wrong} predictions lack their feedback's label"
    assert orphans == 0, f"{orphans} predictions carry a label no feedback gave"
    assert len(rows) == expected_labelled
    mismatched = [r for r in rows if r.label != label_of(int(r.request_id[1:]))]
    assert not mismatched, f"labels joined to the wrong prediction: {mismatched[:5]}"


def assert_no_duplicate_positions(engine: sa.Engine) -> None:
    """No two stored rows come from one Kafka message, and no key is stored twice."""
    with engine.connect() as conn:
        for table in ("predictions", "feedback"):
            dup_pos = conn.execute(sa.text(
                f'SELECT count(*) FROM (SELECT topic, "partition", "offset" FROM {table} '
                f'GROUP BY topic, "partition", "offset" HAVING count(*) > 1) d'
            )).scalar()
            dup_key = conn.execute(sa.text(
                f"SELECT count(*) FROM (SELECT model, request_id FROM {table} "
                f"GROUP BY model, request_id HAVING count(*) > 1) d"
            )).scalar()
            assert dup_pos == 0 and dup_key == 0, (table, dup_pos, dup_key)
