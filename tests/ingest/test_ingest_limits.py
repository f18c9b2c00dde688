"""Acceptance: batches the store refuses as a whole, byte-bounded batches, a stuck writer.

Issue 14: a batch too large for PostgreSQL was retried forever (its error taken
for a lost connection) while the progress line said the store was unreachable,
the health check stayed green and the lag read 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg
import pytest
import sqlalchemy as sa
from conftest import (
    assert_labels_joined,
    assert_no_duplicate_positions,
    committed_offsets,
    count,
    encode,
    expected_next_offsets,
    feedback,
    make_config,
    new_metrics,
    prediction,
    producer,
    running,
    send_all,
    wait_for,
)
from store.rollup_check import INGEST_MODELS, assert_rollups_match_raw

from modelmon.config import Config
from modelmon.contract import parse_prediction
from modelmon.ingest.metrics import IngestMetrics
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.writes import Position, write_batch

# Per prediction; with work_mem at 64kB, PostgreSQL sorts a 2,000-event batch into key
# order (modelmon.store.writes) in a temporary file of about 600 kB.
BLOB = "x" * 2000


def _lag(metrics: IngestMetrics) -> float:
    return sum(s.value for m in metrics.lag.collect() for s in m.samples)


def test_postgresql_refusing_a_whole_batch_splits_it_instead_of_retrying_forever(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], pg_url: str, pg_server: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """temp_file_limit makes PostgreSQL refuse a big batch (SQLSTATE 53400, an
    OperationalError like the 256 MB JSONB limit's 54000); half-size batches fit."""
    caplog.set_level(logging.INFO, logger="modelmon.ingest")
    dbname = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:  # type: ignore[attr-defined]
        admin.execute(f"ALTER DATABASE \"{dbname}\" SET work_mem = '64kB'")
        admin.execute(f"ALTER DATABASE \"{dbname}\" SET temp_file_limit = '256kB'")
    engine = make_engine(pg_url)
    upgrade(engine)
    n = 2000
    events = [prediction(i, features={"blob": BLOB}) for i in range(n)]
    # The premise: the store refuses the whole batch, with an error retrying cannot cure.
    with pytest.raises(sa.exc.OperationalError) as refused, engine.begin() as conn:
        write_batch(conn, [(parse_prediction(e), Position("P", 0, i))
                           for i, e in enumerate(events)], [], [])
    assert refused.value.orig.sqlstate == "53400"  # type: ignore[union-attr]

    preds_topic, fb_topic = kafka_topics("preds", 1), kafka_topics("fb", 1)
    prod = producer(kafka_bootstrap)
    labelled = range(0, n, 4)
    pred_positions = send_all(prod, preds_topic, [encode(e) for e in events])
    # The same request again with other content, a batch later: the first write must win.
    pred_positions += send_all(prod, preds_topic, [encode({**events[7], "prediction": 9})])
    fb_positions = send_all(prod, fb_topic, [encode(feedback(i)) for i in labelled])
    prod.close()
    group = f"g-{preds_topic}"
    cfg = Config.model_validate({**make_config(
        kafka_bootstrap, pg_url, preds_topic, fb_topic, group, batch_max_age="3s"),
        "models": INGEST_MODELS})
    metrics = new_metrics(cfg)
    with running(cfg, engine, metrics) as service:
        wait_for(lambda: service.stored >= n + len(labelled) and service.conflicts >= 1, 120,
                 "every event stored although the store refused the whole batch")
    assert metrics.db_errors._value.get() >= 1  # the refusal did happen
    assert service.writer.failing_since is None
    messages = [r.getMessage() for r in caplog.records]
    assert not any("store unavailable" in m or "UNREACHABLE" in m for m in messages)
    assert count(engine, "predictions") == n and count(engine, "feedback") == len(labelled)
    assert count(engine, "dead_letters") == 0 and count(engine, "ingest_conflicts") == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT prediction FROM predictions WHERE request_id = 'r7'")).scalar() == "1"
    assert_labels_joined(engine, len(labelled))
    assert_no_duplicate_positions(engine)
    assert_rollups_match_raw(engine, cfg)
    for topic, positions in ((preds_topic, pred_positions), (fb_topic, fb_positions)):
        assert committed_offsets(kafka_bootstrap, group, topic, 1) == expected_next_offsets(positions)
    engine.dispose()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_batches_close_at_batch_max_bytes(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], store: sa.Engine, db_url: str
) -> None:
    preds_topic, fb_topic = kafka_topics("preds", 2), kafka_topics("fb", 1)
    values = [encode(prediction(i, features={"blob": "y" * 4000})) for i in range(120)]
    size = max(map(len, values))
    prod = producer(kafka_bootstrap)
    positions = send_all(prod, preds_topic, values)
    prod.close()
    group = f"g-{preds_topic}"
    cfg = Config.model_validate(make_config(
        kafka_bootstrap, db_url, preds_topic, fb_topic, group, batch_max_bytes=16384,
        max_message_bytes=8192, batch_max_age="2s"))
    with running(cfg, store) as service:
        wait_for(lambda: service.stored >= len(values), 60, "every event stored")
    with store.connect() as conn:
        # One transaction per batch: its rows share the transaction's ingested_at.
        per_batch = [r[0] for r in conn.execute(sa.text(
            "SELECT count(*) FROM predictions GROUP BY ingested_at"))]
    assert sum(per_batch) == len(values)
    assert max(per_batch) <= 16384 // size < 2000
    assert committed_offsets(kafka_bootstrap, group, preds_topic, 2) == expected_next_offsets(
        positions)


def test_a_stuck_batch_shows_as_stalled_with_its_messages_in_the_lag(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], pg_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A lock holds the writer's transaction: the store is reachable but nothing commits."""
    caplog.set_level(logging.INFO, logger="modelmon.ingest")
    engine = make_engine(pg_url)
    upgrade(engine)
    preds_topic, fb_topic = kafka_topics("preds", 1), kafka_topics("fb", 1)
    n = 300
    prod = producer(kafka_bootstrap)
    send_all(prod, preds_topic, [encode(prediction(i)) for i in range(n)])
    prod.close()
    cfg = Config.model_validate(make_config(
        kafka_bootstrap, pg_url, preds_topic, fb_topic, f"g-{preds_topic}",
        batch_max_events=100, stall_after="1s"))
    metrics = new_metrics(cfg)
    pending = lambda: metrics.batch_pending.collect()[0].samples[0].value  # noqa: E731
    locker_engine = make_engine(pg_url)
    locker = locker_engine.connect()
    locker.begin()
    locker.exec_driver_sql("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE")
    try:
        with running(cfg, engine, metrics) as service:
            wait_for(lambda: service.stalled_for() > 3, 60, "the writer to be stuck")
            # Held back: the batch being written, the full batch behind it, the rest unread.
            wait_for(lambda: _lag(metrics) == n, 30, "the lag to count the held messages")
            assert pending() > 3
            wait_for(lambda: any("store STALLED" in r.getMessage() for r in caplog.records), 10,
                     "the progress line to say the writer is stalled")
            assert service.writer.failing_since is None
            assert not any("UNREACHABLE" in r.getMessage() for r in caplog.records)
            assert len(service.open) <= 100 and not service.spill
            locker.rollback()
            wait_for(lambda: service.stored >= n, 60, "everything stored once the lock went")
            wait_for(lambda: _lag(metrics) == 0 and pending() == 0, 30, "lag and pending age 0")
    finally:
        locker.close()
        locker_engine.dispose()
    assert count(engine, "predictions") == n
    engine.dispose()
