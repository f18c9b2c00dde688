"""Acceptance: crashes, a database outage and malformed messages lose nothing and store nothing twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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
    write_config,
)
from store.rollup_check import INGEST_MODELS, assert_rollups_match_raw

from modelmon.config import Config
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade


def _start_ingest(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelmon", "-c", str(config), "ingest"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_sigkill_at_random_moments_five_times(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], db_url: str, tmp_path: Path
) -> None:
    n_pred = 45_000  # enough that five kills land before the end at full speed
    labelled = range(0, n_pred, 3)
    preds_topic, fb_topic = kafka_topics("preds", 4), kafka_topics("fb", 2)
    prod = producer(kafka_bootstrap)
    send_all(prod, preds_topic, [encode(prediction(i)) for i in range(n_pred)])
    send_all(prod, fb_topic, [encode(feedback(i)) for i in labelled])
    prod.close()
    total = n_pred + len(labelled)
    engine = make_engine(db_url)
    upgrade(engine)
    stored = lambda: count(engine, "predictions") + count(engine, "feedback")  # noqa: E731
    raw = make_config(kafka_bootstrap, db_url, preds_topic, fb_topic, f"g-{preds_topic}",
                      batch_max_events=500)
    # Static membership: a restarted consumer takes its killed predecessor's place at
    # once instead of waiting for its session to time out.
    raw["kafka"]["consumer"] = {**raw["kafka"]["consumer"], "group_instance_id": "ingest-0"}
    raw["models"] = INGEST_MODELS  # slices and an SLO, for the rollup check
    config = write_config(tmp_path, raw)
    log = tmp_path / "ingest.log"
    rng = random.Random(7)
    kills = 0
    proc = _start_ingest(config, log)
    try:
        while kills < 5:
            before = stored()
            # Kill while it is ingesting: after it stored something new, at a random moment.
            wait_for(lambda b=before, p=proc: stored() > b or p.poll() is not None, 90, "progress")
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(rng.uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            assert stored() < total, "ingest finished before the kills; produce more events"
            proc = _start_ingest(config, log)
        wait_for(lambda: stored() >= total, 180, "every event stored after the restarts")
        time.sleep(1.0)  # let it commit; anything stored twice would show below
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert count(engine, "predictions") == n_pred
    assert count(engine, "feedback") == len(labelled)
    assert_labels_joined(engine, len(labelled))
    assert_no_duplicate_positions(engine)
    assert count(engine, "dead_letters") == 0 and count(engine, "ingest_conflicts") == 0
    # Killed transactions took their rollup increments with them; redelivery counted once.
    assert_rollups_match_raw(engine, Config.model_validate(raw))
    engine.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgresql_stopped_for_twenty_seconds(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], db_url: str, pg_server: object
) -> None:
    preds_topic, fb_topic = kafka_topics("preds", 2), kafka_topics("fb", 1)
    engine = make_engine(db_url)
    upgrade(engine)
    cfg = Config.model_validate({**make_config(
        kafka_bootstrap, db_url, preds_topic, fb_topic, f"g-{preds_topic}", batch_max_events=500),
        "models": INGEST_MODELS})
    metrics = new_metrics(cfg)
    prod = producer(kafka_bootstrap)
    first, second = range(0, 10_000), range(10_000, 20_000)
    with running(cfg, engine, metrics) as service:
        pred_positions = send_all(prod, preds_topic, [encode(prediction(i)) for i in first])
        wait_for(lambda: service.stored > 0, 60, "ingest started")
        pg_server.stop()  # type: ignore[attr-defined]
        try:
            outage_started = time.monotonic()
            # Keep producing into the outage: predictions and their feedback.
            pred_positions += send_all(prod, preds_topic, [encode(prediction(i)) for i in second])
            fb_positions = send_all(prod, fb_topic,
                                    [encode(feedback(i)) for i in range(0, 20_000, 4)])
            time.sleep(max(0.0, 20.0 - (time.monotonic() - outage_started)))
            assert service.writer.failing_since is not None, "the outage went unnoticed"
            stored_during_outage = service.stored
        finally:
            pg_server.start()  # type: ignore[attr-defined]
        wait_for(lambda: service.stored >= 20_000 + 5_000, 120, "ingest caught up after the outage")
    prod.close()
    assert stored_during_outage < 25_000
    assert count(engine, "predictions") == 20_000
    assert count(engine, "feedback") == 5_000
    assert_labels_joined(engine, 5_000)
    assert_no_duplicate_positions(engine)
    assert count(engine, "dead_letters") == 0 and count(engine, "ingest_conflicts") == 0
    assert metrics.db_errors._value.get() >= 1
    # Offsets held back during the outage were committed once the store was back.
    for topic, parts, positions in ((preds_topic, 2, pred_positions), (fb_topic, 1, fb_positions)):
        committed = committed_offsets(kafka_bootstrap, f"g-{preds_topic}", topic, parts)
        produced = expected_next_offsets(positions)
        assert {p: committed[p] for p in produced} == produced
    assert_rollups_match_raw(engine, cfg)  # failed transactions rolled their rollups back
    engine.dispose()


# Malformed messages, each with the reason it must be dead-lettered for.
def _malformed(i: int) -> tuple[bytes | None, str, str]:
    """(value, topic kind, expected reason) for the i-th bad message; 11 kinds."""
    good = prediction(100_000 + i)
    kinds: list[tuple[bytes | None, str, str]] = [
        (b"\xff\xfe" + encode(good), "pred", "not_utf8"),
        (b"{\"request_id\": ", "pred", "invalid_json"),
        (None, "pred", "invalid_json"),  # a tombstone
        (encode([good]), "pred", "not_an_object"),
        (encode({k: v for k, v in good.items() if k != "prediction"}), "pred", "missing_field"),
        (encode({**good, "latency_ms": "fast"}), "pred", "wrong_type"),
        (encode({**good, "status": "maybe"}), "pred", "invalid_value"),
        (encode({**good, "colour": "red"}), "pred", "unknown_field"),
        (encode({**good, "schema_version": 7}), "pred", "unknown_schema_version"),
        (encode({**good, "features": {"blob": "x" * 5000}}), "pred", "oversized"),
        (encode({"request_id": f"x{i}", "model": "m", "label": 1.5, "timestamp": 1}), "fb", "wrong_type"),
    ]
    return kinds[i % len(kinds)]


def test_a_thousand_malformed_messages_among_good_ones(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], store: sa.Engine, db_url: str
) -> None:
    preds_topic, fb_topic = kafka_topics("preds", 2), kafka_topics("fb", 1)
    n_good, n_bad = 4_000, 1_000
    rng = random.Random(11)
    plan: list[tuple[str, bytes | None, str | None]] = [
        ("pred", encode(prediction(i)), None) for i in range(n_good)
    ] + [("fb", encode(feedback(i)), None) for i in range(0, n_good, 2)]
    plan += [(kind, value, reason) for value, kind, reason in map(_malformed, range(n_bad))]
    rng.shuffle(plan)
    prod = producer(kafka_bootstrap)
    topics = {"pred": preds_topic, "fb": fb_topic}
    futures = [prod.send(topics[kind], value=value, key=b"%d" % n)  # a tombstone needs a key
               for n, (kind, value, _) in enumerate(plan)]
    prod.flush()
    positions = [(f.get(30).topic, f.get(30).partition, f.get(30).offset) for f in futures]
    prod.close()

    cfg = Config.model_validate({**make_config(
        kafka_bootstrap, db_url, preds_topic, fb_topic, f"g-{preds_topic}", max_message_bytes=4096,
        dead_letter_payload_bytes=100), "models": INGEST_MODELS})
    metrics = new_metrics(cfg)
    with running(cfg, store, metrics) as service:
        wait_for(lambda: service.stored + service.dead_lettered >= len(plan), 120, "all messages handled")

    with store.connect() as conn:
        letters = {
            (r.topic, r.partition, r.offset): r
            for r in conn.execute(sa.text('SELECT * FROM dead_letters'))
        }
    expected = {pos: reason for pos, (_, _, reason) in zip(positions, plan, strict=True) if reason}
    assert len(expected) == n_bad and len(set(expected.values())) >= 8
    assert {pos: r.reason for pos, r in letters.items()} == expected
    for pos, (_, value, reason) in zip(positions, plan, strict=True):
        if reason:
            letter = letters[pos]
            assert letter.payload_bytes == (0 if value is None else len(value))
            assert letter.payload == (None if value is None else value[:100])
            assert letter.detail and letter.source == "kafka"
    assert count(store, "predictions") == n_good
    assert count(store, "feedback") == n_good // 2
    assert_labels_joined(store, n_good // 2)
    assert_no_duplicate_positions(store)
    for reason in set(expected.values()):
        assert metrics.dead_letters.labels(reason)._value.get() == list(expected.values()).count(reason)

    # Offsets committed past every message, good or bad.
    for topic, parts in ((preds_topic, 2), (fb_topic, 1)):
        committed = committed_offsets(kafka_bootstrap, f"g-{preds_topic}", topic, parts)
        produced = expected_next_offsets([(p, o) for t, p, o in positions if t == topic])
        assert {p: committed[p] for p in produced} == produced
    assert_rollups_match_raw(store, cfg)  # dead letters count nowhere


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_second_consumer_joining_mid_ingest_rebalances_without_loss(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], store: sa.Engine, db_url: str
) -> None:
    """Partitions move between two consumers in the middle of ingest (revocations)."""
    preds_topic, fb_topic = kafka_topics("preds", 4), kafka_topics("fb", 2)
    n = 20_000
    prod = producer(kafka_bootstrap)
    send_all(prod, preds_topic, [encode(prediction(i)) for i in range(n)])
    send_all(prod, fb_topic, [encode(feedback(i)) for i in range(0, n, 2)])
    prod.close()
    cfg = Config.model_validate({**make_config(
        kafka_bootstrap, db_url, preds_topic, fb_topic, f"g-{preds_topic}", batch_max_events=300),
        "models": INGEST_MODELS})
    stored = lambda: count(store, "predictions") + count(store, "feedback")  # noqa: E731
    with running(cfg, store) as first:
        wait_for(lambda: first.stored > 0, 60, "the first consumer started")
        with running(cfg, store) as second:
            wait_for(lambda: stored() >= n + n // 2, 180, "everything stored by the pair")
            assert second.ready.is_set()
    assert count(store, "predictions") == n and count(store, "feedback") == n // 2
    assert count(store, "ingest_conflicts") == 0
    # Concurrent writers can each miss the other's half of a label join; reconcile closes it.
    from modelmon.store.rollups import Specs
    from modelmon.store.writes import reconcile_labels

    assert_rollups_match_raw(store, cfg)  # two writers' upserts add up (labels missed or not)
    with store.begin() as conn:
        reconcile_labels(conn, since_ingested_at=0, specs=Specs(cfg))
    assert count(store, "predictions", "WHERE label IS NOT NULL") == n // 2
    assert_rollups_match_raw(store, cfg)  # and reconcile moved the missed labels' counts
