"""The event contract: what a prediction log and a feedback event must look like.

It is defined once, as the msgspec Structs `PredictionEvent` and `FeedbackEvent`
(modelmon/events.py): their field types and `Meta` constraints state every
type, length, range, pattern and enum. From that one definition
  * msgspec decodes and validates a raw Kafka value in one compiled pass
    (`decode_prediction`, `decode_feedback`), or converts a JSON value decoded
    elsewhere (`parse_prediction`, `parse_feedback`);
  * the JSON Schema files in modelmon/schemas/ and the FeedbackEvent component
    of api/openapi.yaml are generated (`python scripts/contract_schemas.py`).
What a schema cannot state is checked here, after decoding: RFC 3339 times with
a time zone, epoch seconds told from milliseconds, label normalisation (class
names distinct after it), scores summing to at most 1, integer labels of at
most 256 digits, NUL and lone surrogates, numbers that fit a double.

Refusals keep their stable `reason` codes and wording: when msgspec refuses an
event, `refusals.explain` checks the fields one by one in a fixed order (schema
version, unknown fields, then the Struct's field order) and words the first
broken rule; a refused message is decoded again by the json module, whose
messages are the documented ones. Refusals are the slow path, valid events the
fast one.

The digest (`digest`) is SHA-256 of the json module's canonical text of the
event; the compiled path hashes msgspec's text instead when it is byte-identical
(`_canonical`), which it is for ASCII events without exotic floats (told from
the values of the numbers when an event has no `features`: `_checked_digest`).
Valid events take fast paths (binary scores, labels and class names inline);
whatever is unusual takes the general functions, with the same results.

Class labels are compared as text after `normalize_label`:
  * booleans and the strings "true"/"false" (any case) become "1" / "0";
  * integers become their decimal text (so 1 and "1" are the same class);
  * other strings are kept as sent, minus surrounding white space (case matters).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from typing import Any

import msgspec
from msgspec import UNSET

from modelmon.events import (
    FEEDBACK_FIELDS,
    MAX_EPOCH_SECONDS,
    MAX_LABEL,
    MAX_LATENCY_MS,
    MAX_REQUEST_ID,
    MAX_SLICE_KEYS,
    MAX_SLICE_VALUE,
    MAX_VERSION,
    MODEL_RE,
    PREDICTION_FIELDS,
    SCHEMA_VERSIONS,
    FeedbackEvent,
    PredictionEvent,
)
from modelmon.refusals import REASONS, ContractError, explain

__all__ = [
    "FEEDBACK_FIELDS", "MAX_EPOCH_SECONDS", "MAX_LABEL", "MAX_LATENCY_MS", "MAX_REQUEST_ID",
    "MAX_SLICE_KEYS", "MAX_SLICE_VALUE", "MAX_VERSION", "MODEL_RE", "PREDICTION_FIELDS", "REASONS",
    "SCHEMA_VERSIONS", "ContractError", "Feedback", "FeedbackEvent", "Prediction", "PredictionEvent",
    "check_not_future", "decode", "decode_feedback", "decode_prediction", "digest", "normalize_label",
    "parse_feedback", "parse_prediction", "parse_timestamp", "score_summary",
]

# RFC 3339 date-time (section 5.6), with the space separator the RFC allows.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")


def normalize_label(value: Any) -> str:
    """The text form under which a class label is stored and compared."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        low = text.lower()
        if low == "true":
            return "1"
        if low == "false":
            return "0"
        return text
    raise ContractError("wrong_type", f"a class label must be a string, integer or boolean, got {type(value).__name__}")


class Prediction(msgspec.Struct, frozen=True, gc=False):
    """A valid prediction log, as stored (a Struct: cheap to build, pickles across processes)."""

    request_id: str
    model: str
    model_version: str
    ts: float
    prediction: str
    scores: dict[str, float] | None
    score_pred: float | None
    score_max: float | None
    entropy: float | None
    latency_seconds: float | None
    status: str
    slices: dict[str, str] | None
    features: dict[str, Any] | None
    schema_version: int
    digest: str


class Feedback(msgspec.Struct, frozen=True, gc=False):
    """A valid feedback event, as stored."""

    request_id: str
    model: str
    label: str
    ts: float
    schema_version: int
    digest: str


# -- digests -------------------------------------------------------------------

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
_SORTED = msgspec.json.Encoder(order="sorted")
# Digits -> "0" and "E" -> "e", to find a number in exponent form with one `in`.
_DIGITS = bytes.maketrans(b"0123456789E", b"0000000000e")
_PLAIN_SCALARS = (str, int, float, bool, type(None))
# Bytes as integers: `int in bytes` is a plain scan, several times cheaper than `b"\x7f" in bytes`.
_DEL, _BACKSLASH = 0x7F, 0x5C


def digest(obj: dict[str, Any]) -> str:
    """Content fingerprint, so a redelivery can be told from a conflicting duplicate.

    SHA-256 of the event's JSON with sorted keys, compact separators and ASCII
    escapes (the json module's output), first 32 hex digits. Stored rows compare
    digests, so this text must never change for the same event.
    """
    return hashlib.sha256(_CANONICAL.encode(obj).encode()).hexdigest()[:32]


def _plain(value: Any) -> bool:
    """JSON-native all the way down (what both encoders write the same way)."""
    kind = type(value)
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list:
        return all(_plain(v) for v in value)
    return kind in _PLAIN_SCALARS


def _fast_digest(event: msgspec.Struct | dict[str, Any]) -> str:
    """`digest` of the same event, through msgspec when its text is byte-identical."""
    data = _SORTED.encode(event)
    if _canonical(data):
        return hashlib.sha256(data).hexdigest()[:32]
    return digest(event if isinstance(event, dict) else msgspec.to_builtins(event))


def _canonical(data: bytes) -> bool:
    """Whether msgspec's text is what the json module writes (the reference).

    They differ on non-ASCII and DEL (json escapes them as \\uXXXX), on floats in
    exponent form (1e16 vs 1e+16) and on floats below 1e-4 (0.00001 vs 1e-05).
    Text that merely looks like those ("v1e5", "10.00005") takes the reference
    path too, which is slower, never wrong.
    """
    return (data.isascii() and _DEL not in data and b"0.0000" not in data
            and b"0e" not in data.translate(_DIGITS))


# A float is written alike by msgspec and the json module when 0 or in [1e-4, 1e16)
# (outside, 1e16 vs 1e+16 and 0.00001 vs 1e-05); integers always are.
def _prediction_digest(ev: PredictionEvent, raw: bytes) -> str:
    """`_fast_digest` of a prediction decoded from `raw`, its numbers checked by value.

    Without `features`, the numbers of a prediction are its timestamp, scores and
    latency: their values tell whether msgspec's text is canonical faster than a
    scan of the text does (`_checked_digest`, inlined: this runs per event).
    Probabilities of 0 and the rest take that scan.
    """
    ts, latency, scores = ev.timestamp, ev.latency_ms, ev.scores
    data = _SORTED.encode(ev)
    if (
        (not ev.features  # UNSET, None or {}
         and (type(ts) is not float or 1e-4 <= ts < 1e16 or ts == 0.0)
         and (type(latency) is not float or 1e-4 <= latency < 1e16 or latency == 0.0)
         and (not scores or min(scores.values()) >= 1e-4)  # probabilities: <= 1
         and raw.isascii() and _DEL not in raw)
        or _canonical(data)
    ):
        return _sha256(data).hexdigest()[:32]
    return digest(msgspec.to_builtins(ev))


def _feedback_digest(ev: FeedbackEvent, raw: bytes) -> str:
    """`_fast_digest` of a feedback event decoded from `raw` (its one number: the timestamp)."""
    ts = ev.timestamp
    return _checked_digest(ev, raw, type(ts) is not float or 1e-4 <= ts < 1e16 or ts == 0.0)


def _checked_digest(ev: msgspec.Struct, raw: bytes, plain_numbers: bool) -> str:
    """`_fast_digest(ev)`, told canonical by `plain_numbers` and the raw text when it can.

    An event decoded from `raw` (no \\u escape reaches the compiled path, and
    the escapes \\" \\\\ \\n ... are written alike) has ASCII text without DEL
    when `raw` has; with numbers written alike too, msgspec's text is canonical.
    """
    data = _SORTED.encode(ev)
    if (plain_numbers and raw.isascii() and _DEL not in raw) or _canonical(data):
        return _sha256(data).hexdigest()[:32]
    return digest(msgspec.to_builtins(ev))


_sha256 = hashlib.sha256

# -- post-decode rules -----------------------------------------------------------

def parse_timestamp(value: Any, field: str = "timestamp") -> float:
    """RFC 3339 text or epoch seconds -> epoch seconds (UTC)."""
    if isinstance(value, bool):
        raise ContractError("wrong_type", f"{field}: expected RFC 3339 text or epoch seconds, got boolean")
    if isinstance(value, int | float):
        ts = float(value) if -1e300 < value < 1e300 else math.inf  # huge ints overflow float()
        if not math.isfinite(ts) or ts < 0:
            raise ContractError("invalid_value", f"{field}: epoch seconds must be a finite number >= 0, got {value!r}")
        if ts > MAX_EPOCH_SECONDS:
            raise ContractError("invalid_value", f"{field}: {value!r} is too large for epoch seconds (milliseconds?)")
        return ts
    if isinstance(value, str):
        if not _RFC3339.fullmatch(value):
            raise ContractError(
                "invalid_value",
                f"{field}: expected RFC 3339 with a time zone (e.g. 2026-11-23T10:00:00Z), got {value[:64]!r}",
            )
        text = value[:-1] + "+00:00" if value[-1] in "Zz" else value
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as exc:  # e.g. month 13, or a leap second (:60)
            raise ContractError("invalid_value", f"{field}: {value!r} is not a valid time: {exc}") from None
        ts = parsed.timestamp()
        if ts < 0:
            raise ContractError("invalid_value", f"{field}: {value!r} is before 1970-01-01T00:00:00Z")
        return ts
    raise ContractError("wrong_type", f"{field}: expected RFC 3339 text or epoch seconds, got {type(value).__name__}")


def check_not_future(ts: float, now: float, max_skew: float, field: str = "timestamp") -> None:
    """Refuse an event time more than `max_skew` seconds ahead of `now`.

    A far-future timestamp (a producer with a broken clock, `9999-12-31`) would
    otherwise sit forever at the top of `max(ts)` and hide a model that went
    quiet; events within the skew are kept, and freshness reads clamp them to now.
    """
    if ts > now + max_skew:
        raise ContractError(
            "timestamp_in_future",
            f"{field}: {ts:.3f} is {ts - now:.0f} s ahead of the receiver's clock "
            f"(more than ingest.max_future_skew = {max_skew:.0f} s)",
        )


def label_of(value: Any, field: str) -> str:
    """A class label field -> its normalised text (1 to MAX_LABEL characters)."""
    try:
        label = normalize_label(value)
    except ContractError as exc:
        raise ContractError(exc.reason, f"{field}: {exc.detail}") from None
    if not label or len(label) > MAX_LABEL:
        raise ContractError("invalid_value", f"{field}: expected 1 to {MAX_LABEL} characters")
    return label


def scores_of(value: Any) -> dict[str, float] | None:
    """class -> probability with class names normalised; distinct, summing to at most 1."""
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise ContractError("wrong_type", "scores: expected a non-empty object of class -> probability")
    out: dict[str, float] = {}
    for key, p in value.items():
        label = normalize_label(key)
        if not label or len(label) > MAX_LABEL:
            raise ContractError("invalid_value", f"scores: class names need 1 to {MAX_LABEL} characters, got {key!r}")
        if isinstance(p, bool) or not isinstance(p, int | float):
            raise ContractError("wrong_type", f"scores.{key}: expected a number, got {type(p).__name__}")
        if not (0.0 <= p <= 1.0):
            raise ContractError("invalid_value", f"scores.{key}: a probability must be in [0, 1], got {p!r}")
        if label in out:
            raise ContractError("invalid_value", f"scores.{key}: class {label!r} appears twice after normalisation")
        out[label] = float(p)
    if len(out) > 1 and sum(out.values()) > 1.0 + 1e-6:
        raise ContractError("invalid_value", f"scores: probabilities sum to {sum(out.values()):.6g} > 1")
    return out


def latency_of(value: Any) -> float | None:
    """latency_ms -> seconds; below MAX_LATENCY_MS so sums of many stay finite."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ContractError("wrong_type", f"latency_ms: expected a number, got {type(value).__name__}")
    if not math.isfinite(value) or not 0 <= value < MAX_LATENCY_MS:
        raise ContractError("invalid_value", f"latency_ms: expected a number >= 0 and below 1e300, got {value!r}")
    return float(value) / 1000.0


def slices_of(value: Any) -> dict[str, str] | None:
    """attribute -> value (an empty object means none)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ContractError("wrong_type", f"slices: expected an object of attribute -> string, got {type(value).__name__}")
    if len(value) > MAX_SLICE_KEYS:
        raise ContractError("invalid_value", f"slices: at most {MAX_SLICE_KEYS} attributes, got {len(value)}")
    for key, v in value.items():
        if not isinstance(v, str):
            raise ContractError("wrong_type", f"slices.{key}: expected a string, got {type(v).__name__}")
        if len(v) > MAX_SLICE_VALUE or len(key) > 64 or not key:
            raise ContractError("invalid_value", f"slices.{key}: attribute names up to 64 and values up to {MAX_SLICE_VALUE} characters")
    return value or None


# Rules of one field beyond its Struct type, applied by `explain` before the type check;
# each also words a refusal of its field's type (so these fields keep their wording).
POST_CHECKS = {
    "timestamp": parse_timestamp,
    "prediction": lambda v: label_of(v, "prediction"),
    "label": lambda v: label_of(v, "label"),
    "scores": scores_of,
    "latency_ms": latency_of,
    "slices": slices_of,
}


def score_summary(scores: dict[str, float] | None, predicted: str) -> tuple[float | None, float | None, float | None]:
    """(probability of the predicted class, top probability, entropy in nats).

    A single score is read as the probability of that class in a binary model,
    so the other class gets the complement.
    """
    if not scores:
        return None, None, None
    if len(scores) == 1:
        (only, p), = scores.items()
        values: Any = (p, 1.0 - p)
        score_pred = p if predicted == only else 1.0 - p
    else:
        values = scores.values()
        score_pred = scores.get(predicted)
    total = sum(values)
    top = max(values)
    entropy = None
    if total > 0:
        entropy = max(-sum([(p / total) * math.log(p / total) for p in values if p > 0]), 0.0)
    return score_pred, top, entropy


# normalize_label of a string after strip(): these two words (any case) are booleans.
_BOOL_WORDS = {"true": "1", "false": "0"}


def _typed_scores(value: dict[str, int | float]) -> dict[str, float]:
    """`scores_of` for a value msgspec already typed (keys, ranges): normalise, no twins, sum <= 1."""
    out: dict[str, float] = {}
    for key, p in value.items():
        label = key.strip()  # normalize_label of a string, inlined: this runs per class per event
        label = _BOOL_WORDS.get(label.lower(), label)
        if not label or label in out:
            return scores_of(value)  # raises, with the usual wording
        out[label] = float(p)
    if len(out) > 1 and sum(out.values()) > 1.0 + 1e-6:
        return scores_of(value)
    return out


def _label(value: Any, field: str) -> str:
    """`label_of` for a value msgspec typed: text and integers inline, the rest (and refusals) there."""
    kind = type(value)
    if kind is str:
        text = value.strip()
        text = _BOOL_WORDS.get(text.lower(), text)
    elif kind is int:
        text = str(value)
    else:
        return label_of(value, field)
    if text and len(text) <= MAX_LABEL:
        return text
    return label_of(value, field)  # raises, with the usual wording


def _class_name(key: str) -> str:
    """normalize_label of a class name msgspec typed as text, remembered for the next events."""
    name = key.strip()
    name = _BOOL_WORDS.get(name.lower(), name)
    if len(_CLASS_NAMES) < _MAX_CLASS_NAMES:
        _CLASS_NAMES[key] = name
    return name


# Class names as sent -> normalised: a model has a few, sent with every event.
_CLASS_NAMES: dict[str, str] = {}
_MAX_CLASS_NAMES = 4096


def _scored(value: Any, predicted: str) -> tuple[
    dict[str, float] | None, float | None, float | None, float | None
]:
    """msgspec-typed scores -> (scores, score_pred, score_max, entropy).

    `_typed_scores` + `score_summary`, with one and two classes (binary models,
    the common case) inline; anything unusual (a class name blank or twice after
    normalisation, a sum above 1, more classes) takes the general path. The
    floats are bit-identical to `score_summary`'s: the same operations in the
    same order (max keeps the first of equals; sum adds to 0.0 left to right,
    which for one or two terms is also what compensated summation gives).
    """
    if not value:  # UNSET is false, like None
        return None, None, None, None
    n = len(value)
    if n == 2:
        (k0, p0), (k1, p1) = value.items()
        k0 = _CLASS_NAMES.get(k0) or _class_name(k0)
        k1 = _CLASS_NAMES.get(k1) or _class_name(k1)
        p0 = float(p0)
        p1 = float(p1)
        total = p0 + p1
        if not (k0 and k1 and k0 != k1 and total <= 1.0 + 1e-6):
            return _scored_general(value, predicted)
        scores = {k0: p0, k1: p1}
        score_pred = p0 if predicted == k0 else p1 if predicted == k1 else None
    elif n == 1:
        (k0, p0), = value.items()
        k0 = _CLASS_NAMES.get(k0) or _class_name(k0)
        if not k0:
            return _scored_general(value, predicted)
        p0 = float(p0)
        scores = {k0: p0}
        p1 = 1.0 - p0  # a single score: the other class of a binary model
        score_pred = p0 if predicted == k0 else p1
        total = p0 + p1
    else:
        return _scored_general(value, predicted)
    top = p1 if p1 > p0 else p0
    if not total > 0:
        return scores, score_pred, top, None
    s = 0.0
    if p0 > 0:
        q = p0 / total
        s += q * _log(q)
    if p1 > 0:
        q = p1 / total
        s += q * _log(q)
    entropy = -s
    return scores, score_pred, top, (0.0 if entropy < 0.0 else entropy)


_log = math.log


def _scored_general(value: dict[str, Any], predicted: str) -> tuple[
    dict[str, float] | None, float | None, float | None, float | None
]:
    scores = _typed_scores(value)  # raises on a refusal
    return scores, *score_summary(scores, predicted)


def _prediction(ev: PredictionEvent, dig: str) -> Prediction:
    """A decoded PredictionEvent -> Prediction, after the rules its type cannot state.

    Optional fields are a value, None or UNSET; msgspec has checked types and
    ranges, so what is left is normalisation and the cross-field rules.
    """
    predicted = _label(ev.prediction, "prediction")
    scores, score_pred, score_max, entropy = _scored(ev.scores, predicted)
    latency = ev.latency_ms
    if latency is UNSET or latency is None:
        latency = None
    else:
        if isinstance(latency, int) and latency >= MAX_LATENCY_MS:  # no msgspec bound past 2**63
            latency_of(latency)
        latency = float(latency) / 1000.0
    ts = ev.timestamp
    return Prediction(
        ev.request_id,
        ev.model,
        ev.model_version or "unknown",
        parse_timestamp(ts) if type(ts) is str else float(ts),  # numbers: range checked
        predicted,
        scores,
        score_pred,
        score_max,
        entropy,
        latency,
        ev.status or "ok",
        ev.slices or None,
        ev.features or None,
        ev.schema_version or 1,
        dig,
    )


def _feedback(ev: FeedbackEvent, dig: str) -> Feedback:
    ts = ev.timestamp
    return Feedback(
        ev.request_id,
        ev.model,
        _label(ev.label, "label"),
        parse_timestamp(ts) if type(ts) is str else float(ts),
        ev.schema_version or 1,
        dig,
    )


def _native(value: Any) -> Any:
    """`value` with subclasses of JSON's types (numpy scalars, IntEnum, ...) as the types themselves.

    Python callers (the client, tests) pass such values; the contract always took
    them (isinstance checks), msgspec's strict conversion does not.
    """
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return value
    if isinstance(value, dict):
        return {_native(k): _native(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_native(v) for v in value]
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base(value)
    return value


def _convert(obj: Any, kind: type[msgspec.Struct]) -> tuple[Any, Any]:
    """A JSON value -> (`kind`, the object it was converted from), or the refusal `explain` words."""
    if type(obj) is not dict:
        raise explain(obj, kind, POST_CHECKS) or ContractError("not_an_object", "expected a JSON object")
    try:
        return msgspec.convert(obj, kind, strict=True), obj
    except msgspec.ValidationError as exc:
        error = str(exc)
    if not _plain(obj):  # from Python, not from JSON: try it with plain types ("features" as sent)
        obj = {k: v if k == "features" else _native(v) for k, v in obj.items()}
        try:
            return msgspec.convert(obj, kind, strict=True), obj
        except msgspec.ValidationError as exc:
            error = str(exc)
    raise explain(obj, kind, POST_CHECKS) or ContractError("invalid_value", error)


def _dict_digest(obj: dict[str, Any]) -> str:
    return _fast_digest(obj) if _plain(obj) else digest(obj)


def parse_prediction(obj: Any) -> Prediction:
    """A decoded JSON value -> Prediction, or ContractError."""
    ev, checked = _convert(obj, PredictionEvent)
    try:
        return _prediction(ev, _dict_digest(obj))
    except ContractError as exc:  # report the first broken rule in field order
        raise explain(checked, PredictionEvent, POST_CHECKS) or exc from None


def parse_feedback(obj: Any) -> Feedback:
    """A decoded JSON value -> Feedback, or ContractError."""
    ev, checked = _convert(obj, FeedbackEvent)
    try:
        return _feedback(ev, _dict_digest(obj))
    except ContractError as exc:
        raise explain(checked, FeedbackEvent, POST_CHECKS) or exc from None


# -- raw bytes -------------------------------------------------------------------

def _reject_constant(name: str) -> Any:
    raise ContractError("invalid_json", f"not JSON: {name} is not a valid JSON number")


_INFINITIES = (math.inf, -math.inf)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in _INFINITIES:  # 1e999 parses to inf, which PostgreSQL's JSONB cannot hold
        raise ContractError("invalid_value", f"number {text[:40]} is too large for a double")
    return value


# The reference decoder: it words every refusal of a message that is not usable JSON.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_ANY = msgspec.json.Decoder()
_PREDICTIONS = msgspec.json.Decoder(PredictionEvent)
_FEEDBACK = msgspec.json.Decoder(FeedbackEvent)
# Escapes that may decode to text the store cannot keep (NUL, lone surrogates).
_SUSPECT_ESCAPE_BYTES = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")


def _bad_text(value: Any) -> bool:
    """Any string (key or value) holding NUL or a lone UTF-16 surrogate."""
    if isinstance(value, str):
        return _BAD_CHAR.search(value) is not None
    if isinstance(value, dict):
        return any(_bad_text(k) or _bad_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_bad_text(v) for v in value)
    return False


def _check_size(raw: bytes | None, max_bytes: int) -> None:
    if raw is None:
        raise ContractError("invalid_json", "empty message (null value)")
    if len(raw) > max_bytes:
        raise ContractError("oversized", f"message is {len(raw)} bytes, the limit is {max_bytes}")


def _decode_reference(raw: bytes) -> Any:
    """The json module's decoding, which words each refusal (msgspec only says it refused)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError("not_utf8", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise ContractError("invalid_json", f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ContractError("invalid_json", "not JSON: nested too deeply") from None
    except ContractError:
        raise
    except ValueError as exc:  # e.g. an integer literal longer than 4300 digits
        raise ContractError("invalid_json", f"not JSON: {str(exc)[:200]}") from None
    return value


def decode(raw: bytes, max_bytes: int) -> Any:
    """Raw Kafka value -> JSON value, with the dead-letter reason on failure.

    Besides JSON syntax this rejects what would make the store fail (and so
    block a whole batch): NUL characters and lone surrogates in strings, and
    numbers that overflow a double (PostgreSQL's JSONB has no Infinity).
    msgspec decodes; anything it refuses (bad syntax or UTF-8, numbers out of
    range, lone surrogates) is decoded again by the json module, whose
    messages are the documented ones.
    """
    _check_size(raw, max_bytes)
    try:
        value = _ANY.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        value = _decode_reference(raw)
    if b"\\u" in raw and _SUSPECT_ESCAPE_BYTES.search(raw) and _bad_text(value):
        raise ContractError(
            "invalid_value",
            "contains a NUL character or a lone UTF-16 surrogate, which the store cannot keep",
        )
    return value


def _refuse(obj: Any, kind: type[msgspec.Struct], parse: Any) -> Any:
    """Raise the refusal of an event msgspec refused (`parse` decides if `explain` finds none)."""
    failure = explain(obj, kind, POST_CHECKS)
    if failure is not None:
        raise failure
    return parse(obj)


def _decode_event(raw: bytes, max_bytes: int, decoder: Any, struct: Any, parse: Any, build: Any, digest: Any) -> Any:
    """Raw Kafka value -> event in one compiled pass; `parse(decode(...))` otherwise.

    Messages with \\u escapes (which may hide a NUL or a lone surrogate) and
    every refused message take the two-step path, which words the refusal.
    """
    if raw is None or len(raw) > max_bytes or (_BACKSLASH in raw and b"\\u" in raw):
        return parse(decode(raw, max_bytes))  # decode() refuses a tombstone or oversize
    try:
        ev = decoder.decode(raw)
    except msgspec.ValidationError:  # JSON, but not a valid event: word the first broken rule
        return _refuse(decode(raw, max_bytes), struct, parse)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return parse(decode(raw, max_bytes))  # decode() words it
    try:
        return build(ev, digest(ev, raw))
    except ContractError:
        return _refuse(decode(raw, max_bytes), struct, parse)


def decode_prediction(raw: bytes, max_bytes: int) -> Prediction:
    """Raw Kafka value -> Prediction in one compiled pass (see `_decode_event`)."""
    return _decode_event(raw, max_bytes, _PREDICTIONS, PredictionEvent, parse_prediction, _prediction, _prediction_digest)


def decode_feedback(raw: bytes, max_bytes: int) -> Feedback:
    """Raw Kafka value -> Feedback in one compiled pass (see `_decode_event`)."""
    return _decode_event(raw, max_bytes, _FEEDBACK, FeedbackEvent, parse_feedback, _feedback, _feedback_digest)
