"""A label sent over HTTP says `source: http` in the audit trace, whichever way it was stored,
and POST /v1/feedback stamps a missing `timestamp` with the receipt time (issue 13)."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

from api_helpers import (
    feedback_event,
    make_config,
    prediction_event,
    serve,
    store_predictions,
    wait_for,
)

from modelmon.api.producer import feedback_producer
from modelmon.client import ModelmonClient
from modelmon.contract import parse_timestamp
from modelmon.ingest.batch import parse_records


class _Acked:
    def get(self, timeout: float | None = None) -> None:
        return None


class _RecordingProducer:
    """Acknowledges every send and keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, topic: str, key: bytes | None = None, value: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None) -> _Acked:
        self.sent.append({"topic": topic, "key": key, "value": value, "headers": headers})
        return _Acked()

    def flush(self, timeout: float | None = None) -> None:
        pass


def _record(value: dict[str, Any], headers: list[tuple[str, bytes]] | None, offset: int = 0) -> SimpleNamespace:
    return SimpleNamespace(topic="fb", partition=0, offset=offset, value=json.dumps(value).encode(),
                           headers=headers or [])


def test_ingest_reads_the_source_header_of_a_feedback_message() -> None:
    parsed = parse_records(
        [_record(feedback_event("a"), [("modelmon-source", b"http")], 0),
         _record(feedback_event("b"), None, 1),
         _record(feedback_event("c"), [("modelmon-source", b"somewhere")], 2)],  # unknown: not trusted
        "preds", "fb", 65536, 1024,
    )
    assert [(fb.request_id, pos.source) for fb, pos in parsed.feedback] == [
        ("a", "http"), ("b", "kafka"), ("c", "kafka")]


def test_the_api_marks_what_it_produces_and_stamps_a_missing_timestamp(sqlite_engine) -> None:
    producer = _RecordingProducer()
    event = feedback_event("r-1")
    del event["timestamp"]
    before = time.time()
    with serve(make_config(), sqlite_engine, producer) as s:
        r = s.post_json("/v1/feedback", event)
    after = time.time()
    assert r.status == 200, r.body
    (sent,) = producer.sent
    assert sent["headers"] == [("modelmon-source", b"http")]
    forwarded = json.loads(sent["value"])
    # The Kafka contract still requires `timestamp`: the forwarded event carries the receipt time.
    assert before <= parse_timestamp(forwarded["timestamp"]) <= after
    assert {k: v for k, v in forwarded.items() if k != "timestamp"} == event


def test_a_label_without_timestamp_written_to_the_store_gets_the_receipt_time(sqlite_engine) -> None:
    store_predictions(sqlite_engine, [prediction_event("r-1"), prediction_event("r-2")])
    event = feedback_event("r-1", label=0)
    del event["timestamp"]
    with serve(make_config(), sqlite_engine) as s:
        before = time.time()
        r = s.post_json("/v1/feedback", event)
        after = time.time()
        assert r.status == 200, r.body
        assert r.json()["stored"] == 1
        assert s.post_json("/v1/feedback", feedback_event("r-2")).status == 200
        label = s.request("GET", "/v1/models/fraud/predictions/r-1").json()["label"]
        sent = s.request("GET", "/v1/models/fraud/predictions/r-2").json()["label"]
    assert label["source"] == "http" and label["value"] == "0"
    assert before <= label["time"]["epoch"] <= after
    # A timestamp that is sent is kept.
    assert sent["time"]["epoch"] == parse_timestamp(feedback_event()["timestamp"])




def test_a_label_posted_over_http_through_kafka_says_http(pipeline) -> None:
    cfg, engine = pipeline
    client = ModelmonClient(cfg.kafka.bootstrap_servers, cfg.kafka.predictions_topic, cfg.kafka.feedback_topic)
    producer = feedback_producer(cfg)
    try:
        for rid in ("via-http", "via-kafka"):
            p = prediction_event(rid)
            client.log_prediction(request_id=rid, model="fraud", prediction=p["prediction"],
                                  timestamp=p["timestamp"], model_version="v3")
        assert client.flush(30)
        with serve(cfg, engine, producer) as s:
            def trace(rid: str) -> dict[str, Any] | None:
                r = s.request("GET", f"/v1/models/fraud/predictions/{rid}")
                return r.json() if r.status == 200 else None

            wait_for(lambda: trace("via-http") and trace("via-kafka"), what="predictions ingested")
            assert s.post_json("/v1/feedback", feedback_event("via-http", label=0)).status == 200
            client.log_feedback(request_id="via-kafka", model="fraud", label=0,
                                timestamp=feedback_event()["timestamp"])
            assert client.flush(30)
            labels = wait_for(
                lambda: all((trace(r) or {}).get("label") for r in ("via-http", "via-kafka"))
                and {r: trace(r)["label"] for r in ("via-http", "via-kafka")},  # type: ignore[index]
                what="labels joined",
            )
    finally:
        producer.close(timeout=5)
        client.close()
    assert labels["via-http"]["source"] == "http"
    assert labels["via-kafka"]["source"] == "kafka"
    assert labels["via-http"]["kafka"]["topic"] == cfg.kafka.feedback_topic  # still traced to its position
