"""send_feedback_http against a served API (store path)."""

from __future__ import annotations

import socket

import pytest
from api_helpers import (
    TOKEN,
    feedback_event,
    label_of,
    make_config,
    prediction_event,
    serve,
    store_predictions,
)

from modelmon.client import FeedbackHTTPError, send_feedback_http


@pytest.fixture
def served(sqlite_engine):
    store_predictions(sqlite_engine, [prediction_event("r-1"), prediction_event("r-2")])
    with serve(make_config(max_feedback_batch=3), sqlite_engine) as s:
        yield s


def test_one_event_and_a_batch(served, sqlite_engine):
    reply = send_feedback_http(served.url, TOKEN, feedback_event("r-1", label=0))
    assert reply["accepted"] == 1 and reply["rejected"] == []
    reply = send_feedback_http(served.url + "/", TOKEN, [feedback_event("r-2", label=1), feedback_event("r-3", label=2.5)])
    assert reply["accepted"] == 1
    assert [(x["index"], x["path"]) for x in reply["rejected"]] == [(1, "/events/1/label")]
    assert label_of(sqlite_engine, "fraud", "r-1")[0] == "0"
    assert label_of(sqlite_engine, "fraud", "r-2")[0] == "1"


def test_http_errors_raise_with_status_and_reply(served):
    with pytest.raises(FeedbackHTTPError) as bad_token:
        send_feedback_http(served.url, "wrong", feedback_event())
    assert bad_token.value.status == 401 and not bad_token.value.retryable
    with pytest.raises(FeedbackHTTPError) as invalid:
        send_feedback_http(served.url, TOKEN, feedback_event(label=None))
    assert invalid.value.status == 422
    assert invalid.value.reply["rejected"][0]["reason"] == "missing_field"
    with pytest.raises(FeedbackHTTPError) as too_many:
        send_feedback_http(served.url, TOKEN, [feedback_event(f"r-{i}") for i in range(4)])
    assert too_many.value.status == 422 and "limit is 3" in str(too_many.value)


def test_unreachable_server_raises_retryable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FeedbackHTTPError) as exc:
        send_feedback_http(f"http://127.0.0.1:{port}", TOKEN, feedback_event(), timeout=2)
    assert exc.value.status is None and exc.value.retryable
