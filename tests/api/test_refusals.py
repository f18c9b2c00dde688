"""Requests the API must refuse, and the proof that nothing was written."""

from __future__ import annotations

import json
import socket

import pytest
from api_helpers import TOKEN, feedback_event, make_config, row_counts, serve


@pytest.fixture(scope="module")
def served(module_engine):
    with serve(make_config(max_body_bytes=4096, max_feedback_batch=5), module_engine) as s:
        yield s


@pytest.fixture
def sqlite_engine(module_engine):
    return module_engine


def test_missing_token_is_401_with_challenge(served, sqlite_engine):
    before = row_counts(sqlite_engine)
    r = served.post_json("/v1/feedback", feedback_event(), token=None)
    assert r.status == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert row_counts(sqlite_engine) == before


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Bearer \u00e9\u00e8"],
)
def test_bad_token_is_401(served, sqlite_engine, header):
    before = row_counts(sqlite_engine)
    r = served.request("POST", "/v1/feedback", json.dumps(feedback_event()).encode(),
                       headers={"Authorization": header}, token=None)
    assert r.status == 401
    assert row_counts(sqlite_engine) == before


def test_reads_need_a_token_too(served):
    for path in ("/v1/models", "/v1/models/fraud/summary", "/v1/models/fraud/predictions/r-1"):
        assert served.request("GET", path, token=None).status == 401
        assert served.request("GET", path, token="nope").status == 401


def test_openapi_is_public(served):
    r = served.request("GET", "/v1/openapi.json", token=None)
    assert r.status == 200 and r.json()["openapi"].startswith("3.")
    events = r.json()["components"]["schemas"]["FeedbackBatch"]["properties"]["events"]
    assert events["maxItems"] == 5  # this server's server.max_feedback_batch
    assert served.request("GET", "/v1/openapi.yaml", token=None).status == 200


def test_no_tokens_configured_refuses_everything(sqlite_engine, caplog):
    with serve(make_config(tokens=[]), sqlite_engine) as s:
        before = row_counts(sqlite_engine)
        for token in (None, "", "anything"):
            r = s.post_json("/v1/feedback", feedback_event(), token=token)
            assert r.status == 403
            assert "no API tokens" in r.json()["error"]
        assert s.request("GET", "/v1/models").status == 403
        assert row_counts(sqlite_engine) == before
    assert any("no API tokens" in rec.getMessage() for rec in caplog.records)


def test_any_configured_token_works(sqlite_engine):
    with serve(make_config(tokens=["first-token", "second-token"]), sqlite_engine) as s:
        assert s.request("GET", "/v1/models", token="first-token").status == 200
        assert s.request("GET", "/v1/models", token="second-token").status == 200
        assert s.request("GET", "/v1/models", token="third-token").status == 401


def test_oversized_body_is_413(served, sqlite_engine):
    before = row_counts(sqlite_engine)
    events = [feedback_event(f"r-{i}", label="x" * 200) for i in range(4)] * 10
    body = json.dumps({"events": events}).encode()
    assert len(body) > 4096
    r = served.request("POST", "/v1/feedback", body)
    assert r.status == 413
    assert row_counts(sqlite_engine) == before


def test_huge_content_length_is_refused_before_reading(served, sqlite_engine):
    """A declared length over the limit gets 413 without the server waiting for the body."""
    before = row_counts(sqlite_engine)
    with socket.create_connection((served.host, served.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {10**15}\r\n\r\n".encode()
            + b'{"request_id": '
        )
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.0 413") or reply.startswith(b"HTTP/1.1 413")
    assert row_counts(sqlite_engine) == before


def test_too_many_events_is_422(served, sqlite_engine):
    before = row_counts(sqlite_engine)
    r = served.post_json("/v1/feedback", {"events": [feedback_event(f"r-{i}") for i in range(6)]})
    assert r.status == 422
    assert "limit is 5" in r.json()["error"]
    assert row_counts(sqlite_engine) == before


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"\xff\xfe{}", "not_utf8"),
        (b"[" * 100_0 + b"]" * 100_0, None),
        (b'{"request_id": "a\\u0000b", "model": "fraud", "label": 1, "timestamp": 1}', "invalid_value"),
        (b"[]", "not_an_object"),
        (b"42", "not_an_object"),
        (b'{"request_id": "r", "model": "fraud", "label": 1, "timestamp": NaN}', "invalid_json"),
    ],
)
def test_malformed_body_is_422(served, sqlite_engine, body, reason):
    before = row_counts(sqlite_engine)
    r = served.request("POST", "/v1/feedback", body)
    assert r.status == 422, r.body
    if reason:
        assert r.json()["reason"] == reason
    assert row_counts(sqlite_engine) == before


def test_deeply_nested_json_is_422(sqlite_engine):
    with serve(make_config(max_body_bytes=1_048_576), sqlite_engine) as s:
        r = s.request("POST", "/v1/feedback", b"[" * 200_000 + b"]" * 200_000)
        assert r.status == 422
        r = s.request("POST", "/v1/feedback", b'{"events": [' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"]}")
        assert r.status in (413, 422)


@pytest.mark.parametrize(
    "event, reason, path",
    [
        ({"model": "fraud", "label": 1, "timestamp": 1}, "missing_field", "/request_id"),
        (feedback_event(label=None), "missing_field", "/label"),
        (feedback_event(label=1.5), "wrong_type", "/label"),
        (feedback_event(label="  "), "invalid_value", "/label"),
        (feedback_event(model="no spaces"), "invalid_value", "/model"),
        (feedback_event(timestamp="yesterday"), "invalid_value", "/timestamp"),
        (feedback_event(timestamp=1.7e12), "invalid_value", "/timestamp"),
        (feedback_event(extra=1), "unknown_field", ""),
        (feedback_event(schema_version=2), "unknown_schema_version", "/schema_version"),
        (feedback_event(timestamp="9999-12-31T23:59:59Z"), "timestamp_in_future", "/timestamp"),
    ],
)
def test_schema_violation_is_422_with_field_path(served, sqlite_engine, event, reason, path):
    before = row_counts(sqlite_engine)
    r = served.post_json("/v1/feedback", event)
    assert r.status == 422
    body = r.json()
    assert body["accepted"] == 0
    assert body["rejected"] == [{"index": 0, "reason": reason, "path": path, "detail": body["rejected"][0]["detail"]}]
    assert row_counts(sqlite_engine) == before


@pytest.mark.parametrize(
    "ctype",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1", "application/jsonx"],
)
def test_wrong_content_type_is_415(served, sqlite_engine, ctype):
    before = row_counts(sqlite_engine)
    headers = {"Content-Type": ctype} if ctype else {"Content-Type": ""}
    r = served.request("POST", "/v1/feedback", json.dumps(feedback_event()).encode(), headers=headers)
    assert r.status == 415
    assert row_counts(sqlite_engine) == before


def test_content_type_with_utf8_charset_is_fine(served):
    r = served.request("POST", "/v1/feedback", json.dumps(feedback_event()).encode(),
                       headers={"Content-Type": "Application/JSON; charset=UTF-8"})
    assert r.status == 200, r.body


def test_missing_content_length_is_411(served, sqlite_engine):
    before = row_counts(sqlite_engine)
    with socket.create_connection((served.host, served.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + b"2\r\n{}\r\n0\r\n\r\n"
        )
        reply = sock.recv(65536)
    assert b" 411 " in reply.split(b"\r\n", 1)[0]
    assert row_counts(sqlite_engine) == before


def test_batch_wrapper_errors(served, sqlite_engine):
    before = row_counts(sqlite_engine)
    for body, path in (({"events": {}}, "/events"), ({"events": []}, "/events"), ({"events": [], "x": 1}, "")):
        r = served.post_json("/v1/feedback", body)
        assert r.status == 422
        assert r.json()["path"] == path
    assert row_counts(sqlite_engine) == before


def test_large_unread_body_still_gets_its_413(served, sqlite_engine):
    """The server drains what it refused to read, so the client sees the 413, not a reset."""
    before = row_counts(sqlite_engine)
    for _ in range(3):
        r = served.request("POST", "/v1/feedback", b"x" * (8 * 1024 * 1024))
        assert r.status == 413
    assert row_counts(sqlite_engine) == before


def test_a_label_within_the_clock_skew_is_accepted(served, sqlite_engine):
    import time

    r = served.post_json("/v1/feedback", feedback_event(request_id="skewed", timestamp=time.time() + 600))
    assert r.status == 200, r.body
    assert r.json()["accepted"] == 1
