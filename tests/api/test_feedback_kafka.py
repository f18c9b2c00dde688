"""Feedback over HTTP through the Kafka feedback topic.

End to end with the test broker: a prediction produced to Kafka, ingest
running, a label POSTed over HTTP (producer path) and another produced by a
model service; both must end up joined in exactly the same way.
"""

from __future__ import annotations

from api_helpers import feedback_event, make_config, prediction_event, row_counts, serve, wait_for
from kafka.errors import KafkaTimeoutError
from sqlalchemy import select

from modelmon.api.producer import feedback_producer
from modelmon.client import ModelmonClient
from modelmon.config import Config
from modelmon.store import tables


def _rows(engine, table, request_id):
    with engine.connect() as conn:
        return conn.execute(select(table).where(table.c.request_id == request_id)).all()


def test_http_feedback_is_joined_like_kafka_feedback(pipeline):
    cfg, engine = pipeline
    client = ModelmonClient(cfg.kafka.bootstrap_servers, cfg.kafka.predictions_topic, cfg.kafka.feedback_topic)
    producer = feedback_producer(cfg)
    try:
        for rid in ("via-http", "via-kafka"):
            p = prediction_event(rid)
            client.log_prediction(request_id=rid, model="fraud", prediction=p["prediction"],
                                  timestamp=p["timestamp"], scores=p["scores"], model_version="v3")
        assert client.flush(30)
        wait_for(lambda: row_counts(engine)["predictions"] == 2, what="predictions ingested")

        with serve(cfg, engine, producer) as s:
            r = s.post_json("/v1/feedback", feedback_event("via-http", label=0))
            assert r.status == 200, r.body
            assert r.json() == {"accepted": 1, "rejected": [], "destination": "kafka"}
            client.log_feedback(request_id="via-kafka", model="fraud", label=0,
                                timestamp=feedback_event()["timestamp"])
            assert client.flush(30)
            wait_for(lambda: all(_rows(engine, tables.predictions, rid)[0].label for rid in ("via-http", "via-kafka")),
                      what="labels joined")
            trace = s.request("GET", "/v1/models/fraud/predictions/via-http").json()
    finally:
        producer.close(timeout=5)
        client.close()

    (http_pred,), (kafka_pred,) = _rows(engine, tables.predictions, "via-http"), _rows(engine, tables.predictions, "via-kafka")
    assert (http_pred.label, http_pred.label_ts) == (kafka_pred.label, kafka_pred.label_ts) == ("0", 1795428000.0)
    (http_fb,), (kafka_fb,) = _rows(engine, tables.feedback, "via-http"), _rows(engine, tables.feedback, "via-kafka")
    # Both went through the feedback topic; the audit trace still tells HTTP from Kafka.
    assert (http_fb.source, kafka_fb.source) == ("http", "kafka")
    for fb in (http_fb, kafka_fb):
        assert fb.topic == cfg.kafka.feedback_topic
        assert fb.partition == 0 and fb.offset is not None
    assert {http_fb.offset, kafka_fb.offset} == {0, 1}
    assert trace["label"]["value"] == "0"
    assert trace["label"]["kafka"] == {"topic": cfg.kafka.feedback_topic, "partition": 0, "offset": http_fb.offset}
    assert row_counts(engine)["dead_letters"] == 0


class _FailingFuture:
    def get(self, timeout=None):
        raise KafkaTimeoutError("no broker")


class _FailingProducer:
    def send(self, topic, key=None, value=None):
        return _FailingFuture()

    def flush(self, timeout=None):
        pass


def test_kafka_not_acknowledging_is_503_and_nothing_claimed(sqlite_engine):
    before = row_counts(sqlite_engine)
    with serve(make_config(), sqlite_engine, _FailingProducer()) as s:
        r = s.post_json("/v1/feedback", {"events": [feedback_event("a"), feedback_event("b")]})
    assert r.status == 503
    assert r.json()["acknowledged"] == 0 and "retry" in r.json()["error"]
    assert row_counts(sqlite_engine) == before


def test_feedback_producer_is_none_without_kafka():
    cfg = Config.model_validate({"kafka": {"bootstrap_servers": ""}})
    assert feedback_producer(cfg) is None
