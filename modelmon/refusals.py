"""Refusals: the stable reason codes, and wording msgspec's errors the way ingest always has.

msgspec reports the first error it meets in the order of the message's keys,
in its own words ("Expected `str`, got `int` - at `$.model`"). Dead letters and
HTTP rejections promise a stable `reason` and a detail that starts with the
field (the API derives the JSON pointer from it). So when msgspec refuses an
event, `explain` re-checks the decoded object field by field in a fixed order
(schema version, unknown fields, then the Struct's field order), converting
each value alone, and words the first failure.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import msgspec
from msgspec import inspect

from modelmon.events import MODEL_RE, SCHEMA_VERSIONS


class ContractError(ValueError):
    """An event that breaks the contract; `reason` is a short stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# Reasons used by the contract and by ingest (dead-letter reasons).
REASONS = (
    "oversized",
    "not_utf8",
    "invalid_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "unknown_field",
    "unknown_schema_version",
    # Event time further ahead of the receiver's clock than `ingest.max_future_skew`.
    "timestamp_in_future",
    # Ingest only: the store refused an event that passed the contract; a
    # topic that is not an ingest topic.
    "store_rejected",
    "unknown_topic",
)

# What a field of a plain type expects, for "<field>: expected ..., got <type>".
_EXPECTS = {
    "request_id": "a string",
    "model": "a string",
    "model_version": "a string",
    "status": "'ok' or 'error'",
    "features": "an object",
    "schema_version": "an integer",
}
_TYPE_MISMATCH = re.compile(r"^Expected `[^`]*`, got `")


def _str_type(info: inspect.Type) -> inspect.StrType | None:
    """The string arm of a field's type, if it has one."""
    if isinstance(info, inspect.Metadata):
        return _str_type(info.type)
    if isinstance(info, inspect.StrType):
        return info
    if isinstance(info, inspect.UnionType):
        return next((s for s in map(_str_type, info.types) if s is not None), None)
    return None


@cache
def _fields(kind: type[msgspec.Struct]) -> tuple[tuple[str, Any, bool, inspect.Type], ...]:
    """(name, one-field Struct, required, type info) of each field, in declaration order.

    A value is checked alone by converting {name: value} to its one-field Struct:
    msgspec caches a Struct's compiled type, not a bare annotation's, which it
    would rebuild on every call (ten times the cost of a whole event).
    """
    return tuple(
        (f.name, msgspec.defstruct(f"{kind.__name__}_{f.name}", [(f.name, f.type)]), f.required,
         inspect.type_info(f.type))
        for f in msgspec.structs.fields(kind)
    )


@cache
def _names(kind: type[msgspec.Struct]) -> frozenset[str]:
    return frozenset(kind.__struct_fields__)


def _word(name: str, value: Any, message: str, info: inspect.Type) -> ContractError:
    """msgspec's refusal of one field's value -> reason and detail."""
    if _TYPE_MISMATCH.match(message):
        expects = _EXPECTS.get(name, "a value of another type")
        return ContractError("wrong_type", f"{name}: expected {expects}, got {type(value).__name__}")
    if name == "schema_version":
        supported = ", ".join(map(str, SCHEMA_VERSIONS))
        return ContractError("unknown_schema_version", f"schema_version: {value} is not supported (supported: {supported})")
    if name == "status":
        return ContractError("invalid_value", f"status: expected 'ok' or 'error', got {value!r}")
    text = _str_type(info)
    if text is not None and isinstance(value, str):
        if text.pattern is not None and "matching regex" in message:
            return ContractError("invalid_value", f"{name}: {value!r} must match {MODEL_RE.pattern[1:-1]}")
        return ContractError(
            "invalid_value", f"{name}: expected {text.min_length} to {text.max_length} characters, got {len(value)}"
        )
    return ContractError("invalid_value", f"{name}: {message.split(' - at ')[0]}")


def _check(name: str, kind: Any, info: inspect.Type, value: Any, post: dict[str, Any]) -> ContractError | None:
    """The first broken rule of one present field, or None."""
    rule = post.get(name)
    if rule is not None:  # its own checks word type and range refusals of this field
        try:
            rule(value)
        except ContractError as exc:
            return exc
    try:
        msgspec.convert({name: value}, kind, strict=True)
    except msgspec.ValidationError as exc:
        return _word(name, value, str(exc), info)
    return None


def explain(obj: Any, kind: type[msgspec.Struct], post: dict[str, Any]) -> ContractError | None:
    """The refusal of `obj` as a `kind` event, or None if it breaks no rule.

    `post` maps field names to the contract's post-decode checks (which raise
    ContractError), applied after the field's type check.
    """
    if not isinstance(obj, dict):
        return ContractError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    fields = _fields(kind)
    for name, ftype, _, info in fields:
        if name == "schema_version" and obj.get(name) is not None:
            failure = _check(name, ftype, info, obj[name], post)
            if failure is not None:
                return failure
    extra = sorted(obj.keys() - _names(kind))
    if extra:
        return ContractError("unknown_field", f"unknown field(s): {', '.join(extra)}")
    for name, ftype, required, info in fields:
        value = obj.get(name)
        if value is None:
            if required:
                return ContractError("missing_field", f"{name}: required field is missing")
            continue
        if name != "schema_version":
            failure = _check(name, ftype, info, value, post)
            if failure is not None:
                return failure
    return None
