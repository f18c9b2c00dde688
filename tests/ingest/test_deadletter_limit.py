"""The dead-letter limit against the broker: a burst of bad messages halts its partition only.

Runs with both Kafka clients (conftest BOTH_CLIENTS_MODULES), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import sqlalchemy as sa
from conftest import (
    assert_no_duplicate_positions,
    committed_offsets,
    encode,
    make_config,
    new_metrics,
    prediction,
    producer,
    running,
    wait_for,
)
from kafka.structs import TopicPartition

from modelmon.config import Config

WINDOW, SHARE = 100, 0.5
GOOD_BEFORE, BAD, GOOD_AFTER = 300, 200, 100  # partition 0: a broken producer deploy
OTHER = 600  # partition 1: all good


def first_trip(bad: np.ndarray, window: int, share: float) -> int | None:
    """Reference: the first index whose trailing full window holds more than share bad."""
    sums = np.convolve(bad.astype(int), np.ones(window, dtype=int), mode="valid")
    over = np.flatnonzero(sums > share * window)
    return None if over.size == 0 else int(over[0]) + window - 1


def _rows(engine: sa.Engine, sql: str) -> list[int]:
    with engine.connect() as conn:
        return sorted(int(r[0]) for r in conn.execute(sa.text(sql)))


def test_a_burst_of_bad_messages_halts_its_partition_and_commits_nothing_past_it(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], store: sa.Engine, db_url: str
) -> None:
    preds_topic, fb_topic = kafka_topics("preds", 2), kafka_topics("fb", 1)
    p0 = ([encode(prediction(i)) for i in range(GOOD_BEFORE)]
          + [b'{"request_id": broken' for _ in range(BAD)]
          + [encode(prediction(i)) for i in range(GOOD_BEFORE, GOOD_BEFORE + GOOD_AFTER)])
    p1 = [encode(prediction(i)) for i in range(10_000, 10_000 + OTHER)]
    prod = producer(kafka_bootstrap)
    futures = [prod.send(preds_topic, value=v, partition=0) for v in p0]
    futures += [prod.send(preds_topic, value=v, partition=1) for v in p1]
    prod.flush()
    assert all(f.get(timeout=30).offset >= 0 for f in futures)
    prod.close()
    verdicts = np.array([v.startswith(b'{"request_id": broken') for v in p0])
    trip = first_trip(verdicts, WINDOW, SHARE)
    assert trip is not None and GOOD_BEFORE < trip < GOOD_BEFORE + BAD

    group = f"g-{preds_topic}"
    raw = make_config(kafka_bootstrap, db_url, preds_topic, fb_topic, group,
                      batch_max_events=50, dead_letter_limit_messages=WINDOW,
                      dead_letter_limit_share=SHARE)
    cfg = Config.model_validate(raw)
    metrics = new_metrics(cfg)
    halted = TopicPartition(preds_topic, 0)
    with running(cfg, store, metrics) as service:
        wait_for(lambda: halted in service.halted and service.stored >= GOOD_BEFORE + OTHER,
                 90, "partition 0 halted and everything before it stored")
        time.sleep(2.0)  # time to (wrongly) read on past the halt
        assert service.halted == {halted: trip + 1}
        gauge = {s.labels["partition"]: s.value for m in metrics.halted.collect()
                 for s in m.samples}
        assert gauge == {"0": 1.0}

    # Good traffic before the halt stored once; nothing after the trip point stored or
    # dead-lettered; the other partition entirely.
    where = f"WHERE topic = '{preds_topic}' AND \"partition\" = 0"
    assert _rows(store, f'SELECT "offset" FROM predictions {where}') == list(range(GOOD_BEFORE))
    assert _rows(store, f'SELECT "offset" FROM dead_letters {where}') == list(
        range(GOOD_BEFORE, trip + 1))
    assert _rows(store, f"SELECT \"offset\" FROM predictions WHERE topic = '{preds_topic}' "
                 "AND \"partition\" = 1") == list(range(OTHER))
    assert_no_duplicate_positions(store)
    assert committed_offsets(kafka_bootstrap, group, preds_topic, 2) == {0: trip + 1, 1: OTHER}

    # The runbook's way past a long bad run: the limit off (share 1), restart. The rest
    # of the partition is read from the halt: bad ones dead-lettered, good ones stored.
    raw["ingest"]["dead_letter_limit_share"] = 1
    with running(Config.model_validate(raw), store) as service:
        wait_for(lambda: service.stored >= GOOD_AFTER, 90, "the rest of partition 0")
        assert not service.halted
    good_after = [GOOD_BEFORE + BAD + k for k in range(GOOD_AFTER)]
    assert _rows(store, f'SELECT "offset" FROM predictions {where}') == (
        list(range(GOOD_BEFORE)) + good_after)
    assert _rows(store, f'SELECT "offset" FROM dead_letters {where}') == list(
        range(GOOD_BEFORE, GOOD_BEFORE + BAD))
    assert_no_duplicate_positions(store)
    assert committed_offsets(kafka_bootstrap, group, preds_topic, 2) == {0: len(p0), 1: OTHER}
