"""Feedback over HTTP written straight to the store (no Kafka configured)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from api_helpers import (
    feedback_event,
    label_of,
    make_config,
    prediction_event,
    row_counts,
    serve,
    store_predictions,
)
from sqlalchemy import select

from modelmon.store import tables
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _label_time() -> float:
    return datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()


def test_single_event_labels_its_prediction(engine):
    store_predictions(engine, [prediction_event("r-1"), prediction_event("r-2")])
    with serve(make_config(), engine) as s:
        r = s.post_json("/v1/feedback", feedback_event("r-1", label=True))
    assert r.status == 200, r.body
    reply = r.json()
    assert reply == {"accepted": 1, "rejected": [], "destination": "store", "stored": 1,
                     "duplicates": 0, "conflicts": 0, "labels_joined": 1}
    assert label_of(engine, "fraud", "r-1") == ("1", _label_time())
    assert label_of(engine, "fraud", "r-2") == (None, None)
    with engine.connect() as conn:
        fb = conn.execute(select(tables.feedback)).one()
    assert (fb.source, fb.topic, fb.label) == ("http", None, "1")


def test_batch_accepts_valid_items_and_reports_the_others(engine):
    store_predictions(engine, [prediction_event(f"r-{i}") for i in range(4)])
    events = [
        feedback_event("r-0", label=0),
        feedback_event("r-1", label=1.5),
        {"model": "fraud", "label": 1, "timestamp": 0},
        feedback_event("r-3", label="1"),
    ]
    before = row_counts(engine)
    with serve(make_config(), engine) as s:
        r = s.post_json("/v1/feedback", {"events": events})
    assert r.status == 200
    reply = r.json()
    assert reply["accepted"] == 2 and reply["stored"] == 2 and reply["labels_joined"] == 2
    assert [(x["index"], x["reason"], x["path"]) for x in reply["rejected"]] == [
        (1, "wrong_type", "/events/1/label"),
        (2, "missing_field", "/events/2/request_id"),
    ]
    after = row_counts(engine)
    assert after["feedback"] == before["feedback"] + 2
    assert after["dead_letters"] == before["dead_letters"]
    assert [label_of(engine, "fraud", f"r-{i}")[0] for i in range(4)] == ["0", None, None, "1"]


def test_resending_is_a_duplicate_and_a_different_label_a_conflict(engine):
    store_predictions(engine, [prediction_event("r-1")])
    with serve(make_config(), engine) as s:
        assert s.post_json("/v1/feedback", feedback_event("r-1", label=1)).json()["stored"] == 1
        again = s.post_json("/v1/feedback", feedback_event("r-1", label=1)).json()
        other = s.post_json("/v1/feedback", feedback_event("r-1", label=0)).json()
    assert (again["accepted"], again["stored"], again["duplicates"], again["conflicts"]) == (1, 0, 1, 0)
    assert (other["accepted"], other["stored"], other["duplicates"], other["conflicts"]) == (1, 0, 0, 1)
    assert label_of(engine, "fraud", "r-1")[0] == "1"  # first label wins
    assert row_counts(engine)["ingest_conflicts"] == 1


def test_label_before_prediction_is_kept_and_joined_later(engine):
    """Unknown model / unknown request: accepted, joined when the prediction arrives."""
    with serve(make_config(), engine) as s:
        r = s.post_json("/v1/feedback", feedback_event("early", model="brand-new", label="cat"))
        assert r.status == 200 and r.json()["labels_joined"] == 0
        missing = s.request("GET", "/v1/models/brand-new/predictions/early")
        assert missing.status == 404 and missing.json()["feedback_received"] is True
    store_predictions(engine, [prediction_event("early", model="brand-new", prediction="cat", scores=None)])
    assert label_of(engine, "brand-new", "early") == ("cat", _label_time())
