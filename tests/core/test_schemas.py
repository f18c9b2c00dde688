"""The shipped JSON Schema files are generated from the contract and agree with it.

The files (and the OpenAPI event component) are generated from the msgspec
Structs of modelmon/events.py; a committed copy that differs fails here. A
corpus of good and bad events is validated with `jsonschema` (draft 2020-12,
with an RFC 3339 date-time checker written here from the RFC's grammar) and
with parse_prediction/parse_feedback; both must accept or reject each event.
Rules JSON Schema cannot state (scores summing to <= 1, classes colliding after
label normalisation, huge integer labels) are checked separately: the schema
accepts those events, the validator rejects them.
"""

from __future__ import annotations

import calendar
import json
import re
from importlib.resources import files
from typing import Any

import jsonschema
import pytest

from modelmon.contract import ContractError, parse_feedback, parse_prediction

_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))"
)


def rfc3339_date_time(value: object) -> bool:
    """RFC 3339 section 5.6 date-time, ranges per section 5.7 (leap seconds excluded)."""
    if not isinstance(value, str):
        return True
    m = _DATE_TIME.fullmatch(value)
    if not m:
        return False
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return False
    if hour > 23 or minute > 59 or second > 59:
        return False
    if m.group(9) is not None and (int(m.group(9)) > 23 or int(m.group(10)) > 59):
        return False
    return year >= 1970


FORMATS = jsonschema.FormatChecker(formats=())
FORMATS.checks("date-time")(rfc3339_date_time)


def schema(name: str) -> dict[str, Any]:
    return json.loads((files("modelmon") / "schemas" / f"{name}.v1.schema.json").read_text())


def validator(name: str) -> jsonschema.Draft202012Validator:
    s = schema(name)
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(s, format_checker=FORMATS)


P = {"request_id": "r1", "model": "fraud", "timestamp": "2026-11-23T10:00:00Z", "prediction": 1}
F = {"request_id": "r1", "model": "fraud", "timestamp": 1_790_000_000, "label": "1"}


def change(base: dict[str, Any], **kw: Any) -> dict[str, Any]:
    out = dict(base)
    for k, v in kw.items():
        if v is ...:
            out.pop(k)
        else:
            out[k] = v
    return out


PREDICTIONS: list[dict[str, Any] | Any] = [
    # good
    P,
    change(P, prediction="cat", model_version="v1.2", scores={"cat": 0.9, "dog": 0.1},
           latency_ms=3, status="error", slices={"sex": "F"}, features={"x": [1, {"y": None}]},
           schema_version=1),
    change(P, prediction=True, scores={"1": 0.75}),
    change(P, prediction=False, timestamp=0),
    change(P, timestamp=1_790_000_000.5, latency_ms=0),
    change(P, latency_ms=9.9e299),
    change(P, timestamp="2026-11-23T10:00:00.123+05:30"),
    change(P, timestamp="2026-11-23 10:00:00z"),
    change(P, timestamp="2024-02-29T23:59:59-08:00"),
    change(P, model_version=None, scores=None, latency_ms=None, status=None, slices=None,
           features=None, schema_version=None),
    change(P, slices={}, features={}),
    change(P, model="a" * 64, request_id="r" * 256, prediction="p" * 256),
    change(P, slices={f"k{i}": "v" for i in range(32)}),
    change(P, prediction=-7),
    # bad: one rule each
    change(P, request_id=...),
    change(P, request_id=None),
    change(P, request_id=1),
    change(P, request_id=""),
    change(P, request_id="r" * 257),
    change(P, model=...),
    change(P, model="a b"),
    change(P, model="a" * 65),
    change(P, model=""),
    change(P, model_version=2),
    change(P, model_version=""),
    change(P, model_version="v" * 129),
    change(P, timestamp=...),
    change(P, timestamp=None),
    change(P, timestamp=True),
    change(P, timestamp=-1),
    change(P, timestamp=1e12),
    change(P, timestamp="2026-11-23T10:00:00"),
    change(P, timestamp="2026-11-23"),
    change(P, timestamp="2026-11-23T10:00Z"),
    change(P, timestamp="2026-02-30T10:00:00Z"),
    change(P, timestamp="2026-11-23T24:00:00Z"),
    change(P, timestamp="1960-01-01T00:00:00Z"),
    change(P, timestamp="tomorrow"),
    change(P, timestamp=[1]),
    change(P, prediction=...),
    change(P, prediction=None),
    change(P, prediction=1.5),
    change(P, prediction=[1]),
    change(P, prediction={"c": 1}),
    change(P, prediction=""),
    change(P, prediction="  "),
    change(P, prediction="p" * 257),
    change(P, scores={}),
    change(P, scores=[0.1]),
    change(P, scores={"a": "0.5"}),
    change(P, scores={"a": True}),
    change(P, scores={"a": 1.01}),
    change(P, scores={"a": -0.01}),
    change(P, scores={"": 0.5}),
    change(P, scores={"  ": 0.5}),
    change(P, latency_ms="5"),
    change(P, latency_ms=-0.1),
    change(P, latency_ms=False),
    change(P, latency_ms=1.7e308),  # finite, but at or above the documented 1e300 bound
    change(P, latency_ms=1e300),
    change(P, status="ERROR"),
    change(P, status=0),
    change(P, slices=["a"]),
    change(P, slices={"a": 1}),
    change(P, slices={"a": None}),
    change(P, slices={"": "x"}),
    change(P, slices={"a" * 65: "x"}),
    change(P, slices={"a": "x" * 129}),
    change(P, slices={f"k{i}": "v" for i in range(33)}),
    change(P, features=[1]),
    change(P, features="x"),
    change(P, schema_version=2),
    change(P, schema_version=0),
    change(P, schema_version="1"),
    change(P, extra=1),
    change(P, label=1),
    [P],
    "text",
    42,
    None,
]

FEEDBACK: list[dict[str, Any] | Any] = [
    F,
    change(F, label=0, timestamp="2026-11-23T10:00:00Z"),
    change(F, label=True, schema_version=1),
    change(F, label=" cat "),
    change(F, schema_version=None),
    change(F, request_id=...),
    change(F, model=...),
    change(F, label=...),
    change(F, timestamp=...),
    change(F, label=None),
    change(F, label=0.5),
    change(F, label=""),
    change(F, label=" "),
    change(F, label=["1"]),
    change(F, model="bad/name"),
    change(F, request_id=""),
    change(F, timestamp="2026-11-23T10:00:00"),
    change(F, timestamp=-5),
    change(F, schema_version=3),
    change(F, prediction=1),
    change(F, slices={}),
    [],
    "x",
]


def _ok(parse: Any, obj: Any) -> bool:
    try:
        parse(obj)
    except ContractError:
        return False
    return True


@pytest.mark.parametrize("obj", PREDICTIONS, ids=lambda o: json.dumps(o)[:70])
def test_prediction_schema_agrees_with_the_validator(obj: Any) -> None:
    by_schema = validator("prediction").is_valid(obj)
    assert by_schema == _ok(parse_prediction, obj), list(validator("prediction").iter_errors(obj))


@pytest.mark.parametrize("obj", FEEDBACK, ids=lambda o: json.dumps(o)[:70])
def test_feedback_schema_agrees_with_the_validator(obj: Any) -> None:
    by_schema = validator("feedback").is_valid(obj)
    assert by_schema == _ok(parse_feedback, obj), list(validator("feedback").iter_errors(obj))


def test_corpus_has_both_outcomes() -> None:
    preds = [_ok(parse_prediction, o) for o in PREDICTIONS]
    fbs = [_ok(parse_feedback, o) for o in FEEDBACK]
    assert sum(preds) >= 10 and len(preds) - sum(preds) >= 50
    assert sum(fbs) >= 4 and len(fbs) - sum(fbs) >= 15


@pytest.mark.parametrize(
    "obj",
    [
        change(P, scores={"0": 0.7, "1": 0.7}),  # sums to more than 1
        change(P, scores={"1": 0.5, "true": 0.5}),  # one class twice after normalisation
        change(P, prediction=10**300),  # 301 characters as a label
    ],
)
def test_rules_beyond_json_schema_are_enforced_by_the_validator(obj: Any) -> None:
    assert validator("prediction").is_valid(obj)
    assert not _ok(parse_prediction, obj)


def test_schemas_list_the_same_fields_as_the_contract() -> None:
    from modelmon.contract import FEEDBACK_FIELDS, PREDICTION_FIELDS

    assert set(schema("prediction")["properties"]) == PREDICTION_FIELDS
    assert set(schema("feedback")["properties"]) == FEEDBACK_FIELDS
    assert set(schema("prediction")["required"]) == {"request_id", "model", "timestamp", "prediction"}
    assert set(schema("feedback")["required"]) == {"request_id", "model", "label", "timestamp"}


def test_committed_files_are_generated_from_the_contract() -> None:
    """Run `python scripts/contract_schemas.py` after changing modelmon/events.py."""
    from modelmon.schemagen import stale

    assert stale() == []


def test_openapi_feedback_event_is_the_contract_with_optional_timestamp() -> None:
    """The HTTP component accepts and refuses what the Kafka schema does, bar a missing timestamp."""
    import yaml
    from jsonschema import Draft4Validator

    from modelmon.schemagen import OPENAPI

    component = yaml.safe_load(OPENAPI.read_text())["components"]["schemas"]["FeedbackEvent"]
    # OpenAPI 3.0's `nullable` is not JSON Schema: spell it out for the check.
    sv = dict(component["properties"]["schema_version"])
    sv.pop("nullable"), sv.pop("type")
    http = Draft4Validator({**component, "properties": {**component["properties"], "schema_version": sv}},
                           format_checker=FORMATS)
    for obj in FEEDBACK:
        if isinstance(obj, dict) and "timestamp" not in obj:
            continue  # the one difference, checked below
        assert http.is_valid(obj) == validator("feedback").is_valid(obj), obj
    assert http.is_valid(change(F, timestamp=...)) and not validator("feedback").is_valid(change(F, timestamp=...))
