"""Smoke tests for the test infrastructure itself (tests/conftest.py, tests/servers.py).

If these fail, every integration test downstream is suspect, so they check the
exact behaviours other tests rely on: group consumption across partitions, fresh
topics and databases, and PostgreSQL surviving a stop/start cycle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import servers
import sqlalchemy as sa
from kafka import KafkaConsumer, KafkaProducer, TopicPartition


def test_missing_binary_fails_with_setup_hint(tmp_path: Path) -> None:
    with pytest.raises(servers.MissingBinaryError, match="make setup"):
        servers.require_executable(tmp_path / "nope", "thing")


@pytest.mark.integration
def test_kafka_group_round_trip(kafka_bootstrap: str, kafka_topics: Callable[..., str]) -> None:
    assert kafka_bootstrap.startswith("127.0.0.1:")
    topic = kafka_topics("infra", partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    try:
        assert producer.partitions_for(topic) == {0, 1, 2}
        for i in range(30):
            producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
        producer.flush(10)
    finally:
        producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=servers.new_topic_name("group"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **servers.TANSU_CONSUMER_DEFAULTS,
    )
    try:
        seen: dict[bytes, int] = {}
        deadline = time.monotonic() + 30
        while len(seen) < 30 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                for rec in records:
                    seen[rec.value] = rec.partition
        assert sorted(seen) == sorted(f"v{i}".encode() for i in range(30))
        assert set(seen.values()) == {0, 1, 2}
        consumer.commit()
        tps = [TopicPartition(topic, p) for p in range(3)]
        assert sum(consumer.committed(tp) or 0 for tp in tps) == 30
    finally:
        consumer.close()


@pytest.mark.integration
def test_kafka_topics_are_unique(kafka_topics: Callable[..., str]) -> None:
    assert kafka_topics("same") != kafka_topics("same")


def test_db_url_is_fresh_and_usable(db_url: str) -> None:
    # The postgresql variant is marked `integration` by conftest; sqlite stays a unit test.
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            assert not sa.inspect(conn).get_table_names()
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.integration
def test_pg_stop_start_keeps_data(pg_server: servers.PostgresServer, pg_url: str) -> None:
    assert pg_url == pg_server.url(pg_url.rsplit("/", 1)[1])
    engine = sa.create_engine(pg_url, pool_pre_ping=True)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            conn.execute(sa.text("INSERT INTO t VALUES (42)"))
        pg_server.stop()
        assert not pg_server.running()
        with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        pg_server.start()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT x FROM t")).scalar() == 42
    finally:
        engine.dispose()
