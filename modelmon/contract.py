"""The event contract: what a prediction log and a feedback event must look like.

Validation is hand-written (not jsonschema at run time) because ingest checks every
message on the hot path; tests/core/test_contract.py keeps it in agreement with
the JSON Schema files shipped in modelmon/schemas/.

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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

SCHEMA_VERSIONS = (1,)
MODEL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_REQUEST_ID = 256
MAX_LABEL = 256
MAX_VERSION = 128
MAX_SLICE_KEYS = 32
MAX_SLICE_VALUE = 128
# RFC 3339 date-time (section 5.6), with the space separator the RFC allows.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
# Epoch values above this are almost certainly milliseconds (year 5138).
MAX_EPOCH_SECONDS = 1e11
# latency_ms must be below this (exclusive): sums of many latencies stay finite.
# The JSON Schema says the same (`exclusiveMaximum`); tests keep them in line.
MAX_LATENCY_MS = 1e300


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


@dataclass(frozen=True, slots=True)
class Prediction:
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


@dataclass(frozen=True, slots=True)
class Feedback:
    request_id: str
    model: str
    label: str
    ts: float
    schema_version: int
    digest: str


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: dict[str, Any]) -> str:
    """Content fingerprint, so a redelivery can be told from a conflicting duplicate."""
    return hashlib.sha256(_CANONICAL.encode(obj).encode()).hexdigest()[:32]


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


def _require(obj: dict[str, Any], field: str) -> Any:
    if field not in obj or obj[field] is None:
        raise ContractError("missing_field", f"{field}: required field is missing")
    return obj[field]


def _text(obj: dict[str, Any], field: str, max_len: int, default: str | None = None) -> str:
    value = obj.get(field, default) if default is not None else _require(obj, field)
    if value is None:
        value = default
    if not isinstance(value, str):
        raise ContractError("wrong_type", f"{field}: expected a string, got {type(value).__name__}")
    if not value or len(value) > max_len:
        raise ContractError("invalid_value", f"{field}: expected 1 to {max_len} characters, got {len(value)}")
    return value


def _model(obj: dict[str, Any]) -> str:
    model = _text(obj, "model", 64)
    if not MODEL_RE.match(model):
        raise ContractError("invalid_value", f"model: {model!r} must match [A-Za-z0-9_.-]{{1,64}}")
    return model


def _label(obj: dict[str, Any], field: str) -> str:
    value = _require(obj, field)
    try:
        label = normalize_label(value)
    except ContractError as exc:
        raise ContractError(exc.reason, f"{field}: {exc.detail}") from None
    if not label or len(label) > MAX_LABEL:
        raise ContractError("invalid_value", f"{field}: expected 1 to {MAX_LABEL} characters")
    return label


def _schema_version(obj: dict[str, Any]) -> int:
    version = obj.get("schema_version")
    if version is None:  # absent or null: like every optional field, the default
        version = 1
    if isinstance(version, bool) or not isinstance(version, int):
        raise ContractError("wrong_type", f"schema_version: expected an integer, got {type(version).__name__}")
    if version not in SCHEMA_VERSIONS:
        raise ContractError(
            "unknown_schema_version",
            f"schema_version: {version} is not supported (supported: {', '.join(map(str, SCHEMA_VERSIONS))})",
        )
    return version


def _check_fields(obj: dict[str, Any], allowed: frozenset[str]) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise ContractError("unknown_field", f"unknown field(s): {', '.join(extra)}")


def _scores(value: Any) -> dict[str, float] | None:
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


def score_summary(scores: dict[str, float] | None, predicted: str) -> tuple[float | None, float | None, float | None]:
    """(probability of the predicted class, top probability, entropy in nats).

    A single score is read as the probability of that class in a binary model,
    so the other class gets the complement.
    """
    if not scores:
        return None, None, None
    probs = dict(scores)
    if len(probs) == 1:
        (only, p), = probs.items()
        probs = {only: p, "\x00other": 1.0 - p}
    total = sum(probs.values())
    score_pred = probs.get(predicted)
    if score_pred is None and len(scores) == 1:
        score_pred = probs["\x00other"]
    top = max(probs.values())
    entropy = None
    if total > 0:
        entropy = -sum((p / total) * math.log(p / total) for p in probs.values() if p > 0)
        entropy = max(entropy, 0.0)
    return score_pred, top, entropy


def _slices(value: Any) -> dict[str, str] | None:
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


PREDICTION_FIELDS = frozenset(
    {"request_id", "model", "model_version", "timestamp", "prediction", "scores", "latency_ms",
     "status", "slices", "features", "schema_version"}
)
FEEDBACK_FIELDS = frozenset({"request_id", "model", "label", "timestamp", "schema_version"})


def parse_prediction(obj: Any) -> Prediction:
    if not isinstance(obj, dict):
        raise ContractError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    version = _schema_version(obj)
    _check_fields(obj, PREDICTION_FIELDS)
    request_id = _text(obj, "request_id", MAX_REQUEST_ID)
    model = _model(obj)
    model_version = _text(obj, "model_version", MAX_VERSION, default="unknown")
    ts = parse_timestamp(_require(obj, "timestamp"))
    predicted = _label(obj, "prediction")
    scores = _scores(obj.get("scores"))
    latency = obj.get("latency_ms")
    if latency is not None:
        if isinstance(latency, bool) or not isinstance(latency, int | float):
            raise ContractError("wrong_type", f"latency_ms: expected a number, got {type(latency).__name__}")
        if not math.isfinite(latency) or not 0 <= latency < MAX_LATENCY_MS:
            raise ContractError(
                "invalid_value", f"latency_ms: expected a number >= 0 and below 1e300, got {latency!r}"
            )
    status = obj.get("status", "ok")
    if status is None:
        status = "ok"
    if not isinstance(status, str):
        raise ContractError("wrong_type", f"status: expected 'ok' or 'error', got {type(status).__name__}")
    if status not in ("ok", "error"):
        raise ContractError("invalid_value", f"status: expected 'ok' or 'error', got {status!r}")
    features = obj.get("features")
    if features is not None and not isinstance(features, dict):
        raise ContractError("wrong_type", f"features: expected an object, got {type(features).__name__}")
    score_pred, score_max, entropy = score_summary(scores, predicted)
    return Prediction(
        request_id=request_id,
        model=model,
        model_version=model_version,
        ts=ts,
        prediction=predicted,
        scores=scores,
        score_pred=score_pred,
        score_max=score_max,
        entropy=entropy,
        latency_seconds=None if latency is None else float(latency) / 1000.0,
        status=status,
        slices=_slices(obj.get("slices")),
        features=features or None,
        schema_version=version,
        digest=digest(obj),
    )


def parse_feedback(obj: Any) -> Feedback:
    if not isinstance(obj, dict):
        raise ContractError("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
    version = _schema_version(obj)
    _check_fields(obj, FEEDBACK_FIELDS)
    return Feedback(
        request_id=_text(obj, "request_id", MAX_REQUEST_ID),
        model=_model(obj),
        label=_label(obj, "label"),
        ts=parse_timestamp(_require(obj, "timestamp")),
        schema_version=version,
        digest=digest(obj),
    )


def _reject_constant(name: str) -> Any:
    raise ContractError("invalid_json", f"not JSON: {name} is not a valid JSON number")


_INFINITIES = (math.inf, -math.inf)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in _INFINITIES:  # 1e999 parses to inf, which PostgreSQL's JSONB cannot hold
        raise ContractError("invalid_value", f"number {text[:40]} is too large for a double")
    return value


# Built once: json.loads(..., parse_constant=...) would build a decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
# Escapes that may decode to text the store cannot keep (NUL, lone surrogates).
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
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


def decode(raw: bytes, max_bytes: int) -> Any:
    """Raw Kafka value -> JSON value, with the dead-letter reason on failure.

    Besides JSON syntax this rejects what would make the store fail (and so
    block a whole batch): NUL characters and lone surrogates in strings, and
    numbers that overflow a double (PostgreSQL's JSONB has no Infinity).
    """
    if raw is None:
        raise ContractError("invalid_json", "empty message (null value)")
    if len(raw) > max_bytes:
        raise ContractError("oversized", f"message is {len(raw)} bytes, the limit is {max_bytes}")
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
    if "\\u" in text and _SUSPECT_ESCAPE.search(text) and _bad_text(value):
        raise ContractError(
            "invalid_value",
            "contains a NUL character or a lone UTF-16 surrogate, which the store cannot keep",
        )
    return value
