"""The event contract: every field rule, label normalisation, timestamps, decoding."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from modelmon.contract import (
    REASONS,
    ContractError,
    decode,
    digest,
    normalize_label,
    parse_feedback,
    parse_prediction,
    parse_timestamp,
)

GOOD_PREDICTION: dict[str, Any] = {
    "request_id": "req-1",
    "model": "fraud",
    "timestamp": "2026-11-23T10:00:00Z",
    "prediction": 1,
}
GOOD_FEEDBACK: dict[str, Any] = {
    "request_id": "req-1", "model": "fraud", "label": 0, "timestamp": 1_790_000_000,
}


def reason_of(parse: Any, obj: Any) -> str:
    with pytest.raises(ContractError) as exc:
        parse(obj)
    assert exc.value.reason in REASONS
    return exc.value.reason


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if value is ...:
            out.pop(key, None)
        else:
            out[key] = value
    return out


# -- label normalisation -------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (1, "1"), ("1", "1"), (True, "1"), ("true", "1"), ("TRUE", "1"), (" True ", "1"),
        (0, "0"), ("0", "0"), (False, "0"), ("false", "0"), ("False", "0"),
        (-3, "-3"), (42, "42"), ("cat", "cat"), (" cat ", "cat"), ("Cat", "Cat"),
        ("01", "01"), ("1.0", "1.0"), ("yes", "yes"),
    ],
)
def test_normalize_label(raw: Any, text: str) -> None:
    assert normalize_label(raw) == text


@pytest.mark.parametrize("raw", [1.0, 0.5, None, [1], {"a": 1}])
def test_labels_must_be_string_integer_or_boolean(raw: Any) -> None:
    with pytest.raises(ContractError) as exc:
        normalize_label(raw)
    assert exc.value.reason == "wrong_type"


def test_equivalent_labels_join_the_same_class() -> None:
    p = parse_prediction(with_(GOOD_PREDICTION, prediction=True))
    f = parse_feedback(with_(GOOD_FEEDBACK, label="1"))
    assert p.prediction == f.label == "1"


# -- timestamps ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-23T10:00:00Z", datetime(2026, 11, 23, 10, tzinfo=UTC).timestamp()),
        ("2026-11-23t10:00:00z", datetime(2026, 11, 23, 10, tzinfo=UTC).timestamp()),
        ("2026-11-23 10:00:00Z", datetime(2026, 11, 23, 10, tzinfo=UTC).timestamp()),
        ("2026-11-23T12:00:00+02:00", datetime(2026, 11, 23, 10, tzinfo=UTC).timestamp()),
        ("2026-11-23T10:00:00.250-00:30", datetime(2026, 11, 23, 10, 30, 0, 250000, tzinfo=UTC).timestamp()),
        (1_790_000_000, 1_790_000_000.0),
        (1_790_000_000.125, 1_790_000_000.125),
        (0, 0.0),
    ],
)
def test_timestamps(value: Any, expected: float) -> None:
    assert parse_timestamp(value) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2026-11-23T10:00:00", "invalid_value"),  # no time zone
        ("2026-11-23", "invalid_value"),  # no time
        ("2026-11-23T10:00Z", "invalid_value"),  # no seconds: not RFC 3339
        ("20261123T100000Z", "invalid_value"),  # ISO 8601 basic format
        ("2026-13-01T00:00:00Z", "invalid_value"),
        ("2026-02-30T00:00:00Z", "invalid_value"),
        (" 2026-11-23T10:00:00Z", "invalid_value"),
        ("yesterday", "invalid_value"),
        ("1969-12-31T23:59:59Z", "invalid_value"),
        (-1, "invalid_value"),
        (1_790_000_000_000, "invalid_value"),  # milliseconds
        (math.inf, "invalid_value"),
        (True, "wrong_type"),
        ([2026], "wrong_type"),
        ({"s": 1}, "wrong_type"),
    ],
)
def test_bad_timestamps(value: Any, reason: str) -> None:
    assert reason_of(parse_timestamp, value) == reason


# -- predictions: field by field -----------------------------------------------

def test_minimal_prediction_gets_the_defaults() -> None:
    p = parse_prediction(GOOD_PREDICTION)
    assert (p.model_version, p.status, p.schema_version) == ("unknown", "ok", 1)
    assert p.scores is p.slices is p.features is p.latency_seconds is None
    assert p.score_pred is p.score_max is p.entropy is None
    assert p.ts == datetime(2026, 11, 23, 10, tzinfo=UTC).timestamp()


def test_full_prediction() -> None:
    p = parse_prediction({
        **GOOD_PREDICTION, "model_version": "v3", "prediction": "cat",
        "scores": {"cat": 0.7, "dog": 0.2, "bird": 0.1}, "latency_ms": 12.5, "status": "error",
        "slices": {"sex": "F", "region": "eu"}, "features": {"age": 31, "tags": ["a"]},
        "schema_version": 1,
    })
    assert p.model_version == "v3" and p.status == "error"
    assert p.latency_seconds == pytest.approx(0.0125)
    assert p.score_pred == pytest.approx(0.7) and p.score_max == pytest.approx(0.7)
    expected_entropy = -sum(q * math.log(q) for q in (0.7, 0.2, 0.1))
    assert p.entropy == pytest.approx(expected_entropy)
    assert p.slices == {"sex": "F", "region": "eu"}
    assert p.features == {"age": 31, "tags": ["a"]}


def test_single_score_is_the_binary_probability_of_that_class() -> None:
    p = parse_prediction(with_(GOOD_PREDICTION, prediction=0, scores={"1": 0.8}))
    assert p.score_pred == pytest.approx(0.2)  # P(class 0) = 1 - P(class 1)
    assert p.score_max == pytest.approx(0.8)
    assert p.entropy == pytest.approx(-(0.8 * math.log(0.8) + 0.2 * math.log(0.2)))


def test_score_keys_are_normalised_like_labels() -> None:
    p = parse_prediction(with_(GOOD_PREDICTION, prediction=True, scores={"false": 0.3, "true": 0.7}))
    assert p.scores == {"0": 0.3, "1": 0.7} and p.score_pred == pytest.approx(0.7)


def test_nulls_in_optional_fields_mean_absent() -> None:
    p = parse_prediction(with_(GOOD_PREDICTION, model_version=None, scores=None, latency_ms=None,
                               status=None, slices=None, features=None, schema_version=None))
    assert (p.model_version, p.status, p.schema_version) == ("unknown", "ok", 1)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"request_id": ...}, "missing_field"),
        ({"request_id": None}, "missing_field"),
        ({"request_id": 5}, "wrong_type"),
        ({"request_id": ""}, "invalid_value"),
        ({"request_id": "x" * 257}, "invalid_value"),
        ({"model": ...}, "missing_field"),
        ({"model": 7}, "wrong_type"),
        ({"model": "has space"}, "invalid_value"),
        ({"model": "x" * 65}, "invalid_value"),
        ({"model": "ünï"}, "invalid_value"),
        ({"model_version": 3}, "wrong_type"),
        ({"model_version": ""}, "invalid_value"),
        ({"model_version": "v" * 129}, "invalid_value"),
        ({"timestamp": ...}, "missing_field"),
        ({"timestamp": "soon"}, "invalid_value"),
        ({"prediction": ...}, "missing_field"),
        ({"prediction": 0.5}, "wrong_type"),
        ({"prediction": [1]}, "wrong_type"),
        ({"prediction": "   "}, "invalid_value"),
        ({"prediction": "c" * 257}, "invalid_value"),
        ({"scores": [0.5]}, "wrong_type"),
        ({"scores": {}}, "wrong_type"),
        ({"scores": {"1": "high"}}, "wrong_type"),
        ({"scores": {"1": True}}, "wrong_type"),
        ({"scores": {"1": 1.5}}, "invalid_value"),
        ({"scores": {"1": -0.1}}, "invalid_value"),
        ({"scores": {"0": 0.6, "1": 0.6}}, "invalid_value"),  # sum > 1
        ({"scores": {"1": 0.5, "true": 0.5}}, "invalid_value"),  # same class twice
        ({"scores": {" ": 0.5}}, "invalid_value"),
        ({"latency_ms": "12"}, "wrong_type"),
        ({"latency_ms": True}, "wrong_type"),
        ({"latency_ms": -1}, "invalid_value"),
        ({"status": "failed"}, "invalid_value"),
        ({"status": 1}, "wrong_type"),
        ({"slices": ["sex"]}, "wrong_type"),
        ({"slices": {"sex": 1}}, "wrong_type"),
        ({"slices": {"sex": None}}, "wrong_type"),
        ({"slices": {"": "F"}}, "invalid_value"),
        ({"slices": {"k" * 65: "F"}}, "invalid_value"),
        ({"slices": {"sex": "F" * 129}}, "invalid_value"),
        ({"slices": {f"k{i}": "v" for i in range(33)}}, "invalid_value"),
        ({"features": [1, 2]}, "wrong_type"),
        ({"features": "a=1"}, "wrong_type"),
        ({"schema_version": 2}, "unknown_schema_version"),
        ({"schema_version": "1"}, "wrong_type"),
        ({"schema_version": True}, "wrong_type"),
        ({"label": 1}, "unknown_field"),
        ({"Timestamp": 1}, "unknown_field"),
    ],
)
def test_prediction_field_rules(changes: dict[str, Any], reason: str) -> None:
    assert reason_of(parse_prediction, with_(GOOD_PREDICTION, **changes)) == reason


def test_error_detail_names_the_field() -> None:
    with pytest.raises(ContractError) as exc:
        parse_prediction(with_(GOOD_PREDICTION, latency_ms=-5))
    assert exc.value.detail.startswith("latency_ms:")


@pytest.mark.parametrize("obj", [[GOOD_PREDICTION], "x", 1, None, True])
def test_not_an_object(obj: Any) -> None:
    assert reason_of(parse_prediction, obj) == "not_an_object"
    assert reason_of(parse_feedback, obj) == "not_an_object"


# -- feedback ------------------------------------------------------------------

def test_feedback() -> None:
    f = parse_feedback(with_(GOOD_FEEDBACK, label="false", timestamp="2026-11-23T10:00:00Z"))
    assert (f.request_id, f.model, f.label, f.schema_version) == ("req-1", "fraud", "0", 1)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"request_id": ...}, "missing_field"),
        ({"model": ...}, "missing_field"),
        ({"label": ...}, "missing_field"),
        ({"label": None}, "missing_field"),
        ({"timestamp": ...}, "missing_field"),
        ({"label": 0.0}, "wrong_type"),
        ({"label": ""}, "invalid_value"),
        ({"model": "a/b"}, "invalid_value"),
        ({"timestamp": "2026-11-23"}, "invalid_value"),
        ({"prediction": 1}, "unknown_field"),
        ({"schema_version": 9}, "unknown_schema_version"),
    ],
)
def test_feedback_field_rules(changes: dict[str, Any], reason: str) -> None:
    assert reason_of(parse_feedback, with_(GOOD_FEEDBACK, **changes)) == reason


# -- digests -------------------------------------------------------------------

def test_digest_ignores_key_order_but_not_content() -> None:
    a = parse_prediction({"model": "fraud", **GOOD_PREDICTION})
    b = parse_prediction(dict(reversed(list(GOOD_PREDICTION.items()))))
    c = parse_prediction(with_(GOOD_PREDICTION, prediction=0))
    assert a.digest == b.digest != c.digest
    assert digest({"a": 1}) == digest({"a": 1}) and len(digest({"a": 1})) == 32


# -- decode --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"x" * 2000, "oversized"),
        (b"\xff\xfe{}", "not_utf8"),
        (b"{\"a\": \"\xc3\x28\"}", "not_utf8"),
        (b"", "invalid_json"),
        (b"{", "invalid_json"),
        (b"{'a': 1}", "invalid_json"),
        (b"[NaN]", "invalid_json"),
        (b"[Infinity]", "invalid_json"),
        (b"[1e999]", "invalid_value"),
        (b"1" * 5000, "oversized"),
        (b"[" * 100_000, "oversized"),
        (b'{"a": "x\\u0000y"}', "invalid_value"),
        (b'{"a\\u0000": 1}', "invalid_value"),
        (b'{"a": "\\ud800"}', "invalid_value"),
        (b'{"a": "\\udc00x"}', "invalid_value"),
    ],
)
def test_decode_failures(raw: bytes, reason: str) -> None:
    with pytest.raises(ContractError) as exc:
        decode(raw, 1024)
    assert exc.value.reason == reason


def test_decode_limits_that_are_not_about_size() -> None:
    with pytest.raises(ContractError) as exc:
        decode(b"1" * 5000, 1 << 20)  # longer than Python's integer conversion limit
    assert exc.value.reason == "invalid_json"
    with pytest.raises(ContractError) as exc:
        decode(b"[" * 100_000 + b"]" * 100_000, 1 << 20)
    assert exc.value.reason == "invalid_json"
    with pytest.raises(ContractError) as exc:
        decode(None, 10)  # type: ignore[arg-type]  # a Kafka tombstone
    assert exc.value.reason == "invalid_json"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b'{"a": "\\\\u0000"}', {"a": "\\u0000"}),  # an escaped backslash, not a NUL
        (b'{"a": "\\ud83d\\ude00"}', {"a": "\U0001F600"}),  # a valid surrogate pair
        ('{"a": "é"}'.encode(), {"a": "é"}),
        (b"[1e300, 12345678901234567890]", [1e300, 12345678901234567890]),
    ],
)
def test_decode_accepts(raw: bytes, value: Any) -> None:
    assert decode(raw, 1 << 20) == value


def test_decoded_events_round_trip() -> None:
    raw = json.dumps(GOOD_PREDICTION).encode()
    assert parse_prediction(decode(raw, 1 << 20)).digest == parse_prediction(GOOD_PREDICTION).digest
