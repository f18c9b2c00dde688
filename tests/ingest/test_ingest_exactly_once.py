"""Acceptance: 50,000 predictions + feedback for 60% of them, stored exactly once, labels joined.

A third of the feedback is produced before its prediction. Runs on SQLite and
PostgreSQL against the real (Tansu) broker.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from conftest import (
    assert_labels_joined,
    assert_no_duplicate_positions,
    committed_offsets,
    count,
    encode,
    expected_next_offsets,
    feedback,
    label_of,
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

N = int(__import__("os").environ.get("INGEST_TEST_N", "50000"))


def test_fifty_thousand_predictions_with_feedback_exactly_once(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], store: sa.Engine, db_url: str
) -> None:
    preds_topic, fb_topic = kafka_topics("preds", 4), kafka_topics("fb", 2)
    labelled = [i for i in range(N) if i % 5 < 3]  # 60%
    early = labelled[::3]  # a third of the feedback goes out before its prediction
    late = sorted(set(labelled) - set(early))

    prod = producer(kafka_bootstrap)
    send_all(prod, fb_topic, [encode(feedback(i)) for i in early])
    pred_positions = send_all(prod, preds_topic, [encode(prediction(i)) for i in range(N)],
                              [f"r{i}".encode() for i in range(N)])
    send_all(prod, fb_topic, [encode(feedback(i)) for i in late])
    # A redelivery from the producer side: the same events again must change nothing.
    send_all(prod, preds_topic, [encode(prediction(i)) for i in range(0, N, 1000)])
    prod.close()

    group = f"g-{preds_topic}"
    cfg = Config.model_validate({
        **make_config(kafka_bootstrap, db_url, preds_topic, fb_topic, group),
        "models": INGEST_MODELS,  # slices and an SLO, for the rollup check below
    })
    metrics = new_metrics(cfg)
    with running(cfg, store, metrics) as service:
        wait_for(lambda: service.stored >= N + len(labelled) and service.duplicates >= N // 1000,
                 timeout=240, what="every event stored")

    assert count(store, "predictions") == N
    assert count(store, "feedback") == len(labelled)
    assert count(store, "dead_letters") == 0 and count(store, "ingest_conflicts") == 0
    with store.connect() as conn:
        rows = conn.execute(sa.text("SELECT request_id, label, label_ts, ts FROM predictions")).all()
        distinct = conn.execute(sa.text(
            'SELECT count(DISTINCT topic || \':\' || "partition" || \':\' || "offset") FROM predictions'
        )).scalar()
    assert distinct == N  # every row traced to its own Kafka message
    got = {r.request_id: r.label for r in rows}
    has_label = set(labelled)
    want = {f"r{i}": (label_of(i) if i in has_label else None) for i in range(N)}
    assert got == want
    assert all(r.label_ts == r.ts + 30 for r in rows if r.label is not None)
    assert_labels_joined(store, len(labelled))
    assert_no_duplicate_positions(store)

    # Offsets: committed = last processed + 1 on every partition.
    committed = committed_offsets(kafka_bootstrap, group, preds_topic, 4)
    produced = expected_next_offsets(pred_positions)
    assert all(committed[p] is not None and committed[p] >= produced[p] for p in produced)

    # Self-metrics count what was stored, not what was read.
    assert metrics.events.labels(preds_topic)._value.get() == N
    assert metrics.events.labels(fb_topic)._value.get() == len(labelled)
    assert metrics.duplicates.labels("prediction")._value.get() == N // 1000
    assert metrics.predictions.labels("m", "unknown", "ok")._value.get() == N

    # The rollups written with those transactions count each event once, labels included.
    stored = assert_rollups_match_raw(store, cfg)
    assert sum(v["n"] for k, v in stored["rollup_requests"].items() if k[1] == 60) == N
    assert stored["rollup_slices"] and stored["rollup_latency_good"]
