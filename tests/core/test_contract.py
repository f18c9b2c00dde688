"""The event contract: every field rule, label normalisation, timestamps, decoding, digests.

Every rule is checked through both entry points: `parse_*` (a decoded JSON
value, msgspec.convert) and `decode_*` (raw bytes, one compiled msgspec pass),
which must agree on the outcome, the reason and the detail.
"""

from __future__ import annotations

import json
import math
import random
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from modelmon.contract import (
    REASONS,
    ContractError,
    decode,
    decode_feedback,
    decode_prediction,
    digest,
    normalize_label,
    parse_feedback,
    parse_prediction,
    parse_timestamp,
)

# Accepted events (raw JSON as sent) with the digest the contract computed before
# it was compiled with msgspec (json-module based); stored rows compare digests.
DIGEST_CORPUS = Path(__file__).with_name("contract_digests.json")

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


def outcome(parse: Any, obj: Any) -> tuple[Any, ...]:
    """What the contract made of `obj`: the parsed event, or (reason, detail)."""
    try:
        return ("ok", parse(obj))
    except ContractError as exc:
        return ("refused", exc.reason, exc.detail)


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
    obj = with_(GOOD_PREDICTION, **changes)
    assert reason_of(parse_prediction, obj) == reason
    assert outcome(lambda raw: decode_prediction(raw, 1 << 20), json.dumps(obj).encode()) == outcome(
        parse_prediction, obj)


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
    obj = with_(GOOD_FEEDBACK, **changes)
    assert reason_of(parse_feedback, obj) == reason
    assert outcome(lambda raw: decode_feedback(raw, 1 << 20), json.dumps(obj).encode()) == outcome(
        parse_feedback, obj)


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


# -- compiled path and the wording of refusals -----------------------------------

def test_refusals_follow_field_order_not_key_order() -> None:
    """msgspec stops at the first bad key as sent; refusals name the first broken rule in field order."""
    obj = with_(GOOD_PREDICTION, request_id=5, model="a b", timestamp="soon", label=1)
    for order in (obj, dict(reversed(list(obj.items())))):
        assert outcome(parse_prediction, order)[1:] == ("unknown_field", "unknown field(s): label")
    del obj["label"]
    for order in (obj, dict(reversed(list(obj.items())))):
        assert outcome(parse_prediction, order)[1:] == ("wrong_type", "request_id: expected a string, got int")
        raw = json.dumps(order).encode()
        assert outcome(lambda r: decode_prediction(r, 1 << 20), raw) == outcome(parse_prediction, order)


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        ({"model": "a b"}, "model: 'a b' must match [A-Za-z0-9_.-]{1,64}"),
        ({"model": ""}, "model: expected 1 to 64 characters, got 0"),
        ({"request_id": None}, "request_id: required field is missing"),
        ({"model_version": 3}, "model_version: expected a string, got int"),
        ({"status": 1}, "status: expected 'ok' or 'error', got int"),
        ({"status": "failed"}, "status: expected 'ok' or 'error', got 'failed'"),
        ({"features": [1]}, "features: expected an object, got list"),
        ({"schema_version": 2}, "schema_version: 2 is not supported (supported: 1)"),
        ({"schema_version": "1"}, "schema_version: expected an integer, got str"),
        ({"timestamp": True}, "timestamp: expected RFC 3339 text or epoch seconds, got boolean"),
        ({"prediction": 0.5}, "prediction: a class label must be a string, integer or boolean, got float"),
        ({"scores": {"1": "x"}}, "scores.1: expected a number, got str"),
        ({"slices": {"a": None}}, "slices.a: expected a string, got NoneType"),
    ],
)
def test_refusal_wording(changes: dict[str, Any], detail: str) -> None:
    """The details dead letters and the HTTP API have always shown ("<field>: ...")."""
    obj = with_(GOOD_PREDICTION, **changes)
    assert outcome(parse_prediction, obj)[2] == detail
    assert outcome(lambda r: decode_prediction(r, 1 << 20), json.dumps(obj).encode())[2] == detail


@pytest.mark.parametrize(
    "raw",
    [
        b'{"request_id":"r","model":"m","timestamp":1,"prediction":"x\\u0000"}',
        b'{"request_id":"r\\u0000","model":"m","timestamp":1,"prediction":1}',
        b'{"request_id":"r","model":"m","timestamp":1,"prediction":1,"features":{"a":"\\ud800"}}',
        b'{"request_id":"r","model":"m","timestamp":1,"prediction":1,"features":{"a":1e999}}',
        b'{"request_id":"r","model":"m","timestamp":1,"prediction":1,"latency_ms":1e999}',
        b'{"request_id":"r","model":"m","timestamp":1,"prediction":NaN}',
        b'{"request_id":"r","model":"m","timestamp":1,"prediction":1,"prediction":"\xff"}',
        b'{"request_id":"r","model":"m","timestamp":1,"prediction":1',
        b'[1]',
    ],
)
def test_decode_prediction_refuses_what_decode_refuses(raw: bytes) -> None:
    with pytest.raises(ContractError) as two_step:
        parse_prediction(decode(raw, 1 << 20))
    with pytest.raises(ContractError) as one_pass:
        decode_prediction(raw, 1 << 20)
    assert (one_pass.value.reason, one_pass.value.detail) == (two_step.value.reason, two_step.value.detail)


def test_size_limits_come_first() -> None:
    raw = json.dumps(GOOD_PREDICTION).encode()
    with pytest.raises(ContractError) as exc:
        decode_prediction(raw, len(raw) - 1)
    assert exc.value.reason == "oversized"
    with pytest.raises(ContractError) as exc:
        decode_feedback(None, 10)  # type: ignore[arg-type]  # a tombstone
    assert exc.value.reason == "invalid_json"


# -- digests stay what they were -------------------------------------------------

def _corpus() -> list[dict[str, str]]:
    return json.loads(DIGEST_CORPUS.read_text())


def test_digest_corpus_is_varied() -> None:
    """The corpus exercises every way msgspec's JSON text differs from the json module's."""
    raws = [c["raw"] for c in _corpus()]
    events = [json.loads(r) for r in raws]
    assert len(raws) >= 300 and {c["kind"] for c in _corpus()} == {"prediction", "feedback"}
    texts = [json.dumps(e, ensure_ascii=False) for e in events]
    assert sum(any(ord(ch) > 126 for ch in t) for t in texts) >= 50  # non-ASCII or DEL
    assert sum("e+" in t or "e-" in t for t in texts) >= 50  # floats in exponent form
    assert sum(not any(ord(ch) > 126 for ch in t) and "e+" not in t and "e-" not in t for t in texts) >= 50


@pytest.mark.parametrize("entry", _corpus(), ids=lambda e: e["digest"][:8])
def test_digests_unchanged(entry: dict[str, str]) -> None:
    raw = entry["raw"].encode()
    one_pass = decode_prediction if entry["kind"] == "prediction" else decode_feedback
    two_step = parse_prediction if entry["kind"] == "prediction" else parse_feedback
    assert one_pass(raw, 1 << 20).digest == entry["digest"]
    assert two_step(decode(raw, 1 << 20)).digest == entry["digest"]
    assert digest(json.loads(raw)) == entry["digest"]


def _random_float(rng: random.Random) -> float:
    while True:
        value = struct.unpack("d", rng.randbytes(8))[0] if rng.random() < 0.3 else 10 ** rng.uniform(-12, 20)
        if math.isfinite(value):
            return value


def test_compiled_digest_matches_the_json_module_on_random_events() -> None:
    """Fresh random events (numbers of every magnitude, odd text): both paths give `digest(obj)`."""
    from modelmon.contract import _canonical

    rng = random.Random(7)
    fast = 0
    texts = ["plain", "caf\u00e9", "\u732b", "tab\t", "del\x7f", "ctl\x1f", "q\"uote", "back\\", "1e5", "0.00001"]
    for i in range(3000):
        obj: dict[str, Any] = {
            "request_id": f"r{i}{rng.choice(texts)}", "model": "m", "prediction": rng.choice([1, True, "c"]),
            "timestamp": rng.choice([rng.uniform(0, 1e11), rng.randrange(10**11), "2026-11-23T10:00:00Z"]),
            "latency_ms": rng.choice([_random_float(rng) % 1e299, rng.randrange(10**20)]),
            "features": {rng.choice(texts): rng.choice([_random_float(rng), -_random_float(rng), rng.choice(texts),
                                                        [rng.randrange(-10**25, 10**25)], None])
                         for _ in range(rng.randrange(4))},
        }
        raw = json.dumps(obj, ensure_ascii=rng.random() < 0.5).encode()
        expected = digest(json.loads(raw))
        assert decode_prediction(raw, 1 << 20).digest == expected, raw
        assert parse_prediction(json.loads(raw)).digest == expected, raw
        fast += _canonical(msgspec.json.encode(json.loads(raw), order="sorted"))
    assert 300 <= fast <= 2700  # both the msgspec text and the json-module fallback were used


def test_python_callers_may_pass_numpy_scalars() -> None:
    """The client validates dicts built in Python: numpy floats and str subclasses are what JSON makes of them."""
    import numpy as np

    obj = with_(GOOD_PREDICTION, timestamp=np.float64(1_790_000_000.25), latency_ms=np.float64(3.5),
                scores={"0": np.float64(0.25), "1": np.float64(0.75)}, model_version=np.str_("v1"),
                features={"x": np.float32(1.5)})
    as_json = json.loads(json.dumps(obj, default=float))
    got, expected = parse_prediction(obj), parse_prediction(as_json)
    assert msgspec.structs.replace(got, features=None, digest="") == msgspec.structs.replace(
        expected, features=None, digest="")
    assert got.features == obj["features"]  # stored as sent
    assert got.digest == digest(obj)  # the json module's text of what was passed (float32 -> str)
    refused = with_(obj, scores={"0": np.float64(0.5), "1": np.float64(0.75)})
    assert outcome(parse_prediction, refused)[1] == "invalid_value"
