"""Batching and parsing logic, without a broker or a database."""

from __future__ import annotations

import json
import time

import pytest
from conftest import Rec
from kafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from modelmon.config import Config
from modelmon.contract import parse_prediction
from modelmon.ingest.batch import Batch, parse_records
from modelmon.ingest.metrics import OTHER, IngestMetrics, latency_buckets_for
from modelmon.ingest.service import consumer_settings


def recs(topic: str, partition: int, offsets: range, value: bytes = b"{}") -> list[Rec]:
    return [Rec(topic, partition, o, value) for o in offsets]


def test_batch_tracks_next_and_first_offsets_per_partition() -> None:
    b = Batch()
    a0, a1 = TopicPartition("a", 0), TopicPartition("a", 1)
    b.add(a0, recs("a", 0, range(10, 15)))
    b.add(a1, recs("a", 1, range(0, 3)))
    b.add(a0, recs("a", 0, range(15, 20)))
    assert len(b) == 13
    assert b.next_offsets == {a0: 20, a1: 3}  # last processed + 1
    assert b.first_offsets == {a0: 10, a1: 0}
    b.add(a1, [])
    assert len(b) == 13


def test_batch_closes_by_size_or_age() -> None:
    b = Batch()
    assert not b.is_due(max_events=3, max_age=0.05)  # an empty batch never closes
    b.add(TopicPartition("a", 0), recs("a", 0, range(2)))
    assert not b.is_due(max_events=3, max_age=60)
    assert b.is_due(max_events=2, max_age=60)
    time.sleep(0.06)
    assert b.is_due(max_events=3, max_age=0.05)
    assert b.age() >= 0.05


def test_batch_without_revoked_partitions() -> None:
    b = Batch()
    a0, a1 = TopicPartition("a", 0), TopicPartition("a", 1)
    b.add(a0, recs("a", 0, range(5)))
    b.add(a1, recs("a", 1, range(7, 9)))
    kept = b.without([a0])
    assert [r.offset for r in kept.records] == [7, 8]
    assert kept.next_offsets == {a1: 9} and kept.first_offsets == {a1: 7}
    assert kept.opened_at == b.opened_at
    assert len(b.without([a0, a1])) == 0 and b.without([a0, a1]).opened_at is None


def test_parse_records_routes_by_topic_and_dead_letters_with_positions() -> None:
    pred = {"request_id": "r", "model": "m", "timestamp": 1, "prediction": 1}
    fb = {"request_id": "r", "model": "m", "timestamp": 2, "label": 0}
    records = [
        Rec("P", 0, 0, json.dumps(pred).encode()),
        Rec("F", 1, 5, json.dumps(fb).encode()),
        Rec("P", 0, 1, b"x" * 300),
        Rec("F", 1, 6, json.dumps(pred).encode()),  # a prediction on the feedback topic
        Rec("P", 0, 2, None),
        Rec("Q", 0, 0, json.dumps(pred).encode()),
    ]
    parsed = parse_records(records, "P", "F", max_message_bytes=256, payload_limit=10)
    assert [(p.request_id, pos.offset) for p, pos in parsed.predictions] == [("r", 0)]
    assert [(f.label, pos.partition, pos.offset) for f, pos in parsed.feedback] == [("0", 1, 5)]
    got = [(d.reason, d.position.topic, d.position.offset, d.payload, d.payload_bytes)
           for d in parsed.dead_letters]
    assert got == [
        ("oversized", "P", 1, b"x" * 10, 300),
        ("unknown_field", "F", 6, json.dumps(pred).encode()[:10], len(json.dumps(pred))),
        ("invalid_json", "P", 2, None, 0),
        ("unknown_topic", "Q", 0, json.dumps(pred).encode()[:10], len(json.dumps(pred))),
    ]


def test_consumer_settings_never_auto_commit_and_pass_security_through() -> None:
    cfg = Config.model_validate({
        "kafka": {"bootstrap_servers": "a:1,b:2", "security": {"security_protocol": "SASL_SSL",
                                                              "sasl_mechanism": "PLAIN"},
                  "consumer": {"enable_auto_commit": True, "fetch_max_wait_ms": 50}},
        "ingest": {"batch_max_events": 777},
    })
    s = consumer_settings(cfg)
    assert s["bootstrap_servers"] == ["a:1", "b:2"]
    assert s["enable_auto_commit"] is False
    assert s["security_protocol"] == "SASL_SSL" and s["sasl_mechanism"] == "PLAIN"
    assert s["fetch_max_wait_ms"] == 50 and s["max_poll_records"] == 777
    assert s["group_id"] == "modelmon-ingest" and s["auto_offset_reset"] == "earliest"


def test_latency_buckets_include_every_slo_threshold() -> None:
    cfg = Config.model_validate({
        "defaults": {"slos": [{"name": "d", "kind": "latency", "threshold": "750ms", "objective": 0.9}]},
        "models": {"fraud": {"slos": [
            {"name": "fast", "kind": "latency", "threshold": "0.3s", "objective": 0.99},
            {"name": "err", "kind": "error_rate", "objective": 0.999},
        ]}},
    })
    buckets = latency_buckets_for(cfg)
    assert 0.3 in buckets and 0.75 in buckets and 0.1 in buckets
    assert buckets == sorted(set(buckets))


def test_metrics_fold_model_versions_beyond_the_cap() -> None:
    m = IngestMetrics(CollectorRegistry(), [0.1, 1.0], max_model_series=3)
    preds = [parse_prediction({"request_id": f"r{i}", "model": "m", "model_version": f"v{i}",
                               "timestamp": 1, "prediction": 1, "latency_ms": 50})
             for i in range(10)]
    m.observe_predictions(preds, "P")
    assert m.events.labels("P")._value.get() == 10
    assert sum(m.predictions.labels("m", f"v{i}", "ok")._value.get() for i in range(3)) == 3
    assert m.predictions.labels("m", OTHER, "ok")._value.get() == 7
    other = parse_prediction({"request_id": "x", "model": "new", "timestamp": 1, "prediction": 1})
    m.observe_predictions([other], "P")
    assert m.predictions.labels(OTHER, OTHER, "ok")._value.get() == 1
    assert m.latency.labels("m")._sum.get() == pytest.approx(0.5)


def test_batch_closes_at_batch_max_bytes() -> None:
    b = Batch()
    a0 = TopicPartition("a", 0)
    b.add(a0, recs("a", 0, range(3), value=b"x" * 100))
    assert b.nbytes == 300
    assert not b.is_due(max_events=100, max_age=60, max_bytes=301)
    assert b.is_due(max_events=100, max_age=60, max_bytes=300)
    b.add(a0, [Rec("a", 0, 3, None)])  # a tombstone weighs nothing
    assert b.nbytes == 300


def test_batch_takes_only_what_fits_in_events_and_bytes() -> None:
    b = Batch()
    a0 = TopicPartition("a", 0)
    records = recs("a", 0, range(10), value=b"x" * 100)
    assert b.take(a0, records, max_events=100, max_bytes=350) == 3
    assert [r.offset for r in b.records] == [0, 1, 2] and b.nbytes == 300
    assert b.next_offsets == {a0: 3}
    assert b.take(a0, records[3:], max_events=100, max_bytes=350) == 0  # full: nothing more
    assert b.take(a0, records[3:], max_events=4, max_bytes=10_000) == 1  # the event bound
    # A message larger than the bound on its own still goes, alone, into an empty batch.
    big = Batch()
    assert big.take(a0, recs("a", 0, range(2), value=b"y" * 500), 100, 350) == 1
    assert big.nbytes == 500


def test_a_far_future_timestamp_is_dead_lettered_on_both_topics() -> None:
    now = 1_790_000_000.0
    pred = {"request_id": "r", "model": "m", "prediction": 1}
    fb = {"request_id": "r", "model": "m", "label": 0}
    records = [
        Rec("P", 0, 0, json.dumps({**pred, "timestamp": "9999-12-31T23:59:59Z"}).encode()),
        Rec("P", 0, 1, json.dumps({**pred, "request_id": "s", "timestamp": now + 600}).encode()),
        Rec("F", 0, 0, json.dumps({**fb, "timestamp": now + 7200}).encode()),
        Rec("F", 0, 1, json.dumps({**fb, "timestamp": now + 3000}).encode()),
    ]
    parsed = parse_records(records, "P", "F", max_message_bytes=1 << 20, payload_limit=100,
                           max_future_skew=3600, now=now)
    assert [p.request_id for p, _ in parsed.predictions] == ["s"]
    assert [pos.offset for _, pos in parsed.feedback] == [1]
    assert [(d.reason, d.position.topic, d.position.offset) for d in parsed.dead_letters] == [
        ("timestamp_in_future", "P", 0), ("timestamp_in_future", "F", 0)
    ]
    assert "ingest.max_future_skew" in parsed.dead_letters[0].detail


def test_consumer_fetches_are_bounded_by_the_batch_bytes() -> None:
    cfg = Config.model_validate({"ingest": {"batch_max_bytes": 4 << 20,
                                            "max_message_bytes": 1 << 20}})
    s = consumer_settings(cfg)
    assert s["fetch_max_bytes"] == 4 << 20
    assert s["max_partition_fetch_bytes"] <= s["fetch_max_bytes"]
    assert s["max_partition_fetch_bytes"] > cfg.ingest.max_message_bytes


def test_pending_seconds_gauge_is_registered_unlabelled() -> None:
    registry = CollectorRegistry()
    m = IngestMetrics(registry, [0.1])
    assert registry.get_sample_value("modelmon_ingest_batch_pending_seconds") == 0.0
    m.watch_pending(lambda: 12.5)
    assert registry.get_sample_value("modelmon_ingest_batch_pending_seconds") == 12.5
