"""POST /v1/feedback: parse and validate the body, hand valid events to a sink.

The body is one feedback event (an object) or a batch `{"events": [...]}`.
Items are validated one by one with the same contract as the Kafka feedback
topic; valid items are accepted and invalid ones reported with their index,
reason and field path, so one bad label does not hold back the rest (writes
are idempotent, so resending a whole batch is harmless).

An event without `timestamp` gets the receipt time (the Python client fills it
in the same way): a label is usually posted when it becomes known. It is set
before validation, so what is forwarded to Kafka meets the topic's contract,
which still requires it.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from modelmon.contract import ContractError, Feedback, check_not_future, decode, parse_feedback
from modelmon.http import HttpError, Request

_FIELD_RE = re.compile(r"^([A-Za-z_][\w.]*): ")


@dataclass(frozen=True, slots=True)
class Item:
    """A validated event: what was sent (forwarded as is) and what it means."""

    index: int
    raw: dict[str, Any]
    event: Feedback

    def encoded(self) -> bytes:
        return encode(self.raw)


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    reason: str
    detail: str
    path: str  # JSON pointer into the request body, e.g. "/events/3/label"

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "reason": self.reason, "detail": self.detail, "path": self.path}


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def check_content_type(req: Request) -> None:
    """Only JSON in UTF-8 (415 otherwise): the contract is defined on JSON text."""
    value = req.headers.get("content-type", "")
    mime, *params = (p.strip() for p in value.split(";"))
    if mime.lower() != "application/json":
        raise HttpError(415, f"expected Content-Type: application/json, got {value or 'none'!r}")
    for param in params:
        name, _, arg = param.partition("=")
        if name.strip().lower() == "charset" and arg.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise HttpError(415, f"expected charset utf-8, got {arg.strip()!r}")


def read_json(req: Request, max_bytes: int) -> Any:
    """The JSON body: 411 without a length, 413 over the limit (before reading), 422 if not JSON."""
    if not req.headers.get("content-length", "").strip():
        raise HttpError(411, "a Content-Length header is required")
    body = req.read_body(max_bytes)
    try:
        return decode(body, max_bytes)
    except ContractError as exc:
        status = 413 if exc.reason == "oversized" else 422
        raise HttpError(status, exc.detail, {"reason": exc.reason, "path": ""}) from None


def _path(prefix: str, detail: str, reason: str) -> str:
    if reason == "unknown_field":
        return prefix
    m = _FIELD_RE.match(detail)
    if not m:
        return prefix
    return prefix + "/" + m.group(1).replace(".", "/")


def split_items(body: Any, max_items: int) -> tuple[list[Any], str]:
    """The list of candidate events and the JSON pointer prefix of item i ("" or "/events")."""
    if isinstance(body, dict) and "events" in body:
        extra = sorted(set(body) - {"events"})
        if extra:
            raise HttpError(
                422,
                f"a batch takes only 'events', got unknown field(s): {', '.join(extra)}",
                {"reason": "unknown_field", "path": ""},
            )
        events = body["events"]
        if not isinstance(events, list):
            raise HttpError(
                422,
                f"events: expected an array of feedback events, got {type(events).__name__}",
                {"reason": "wrong_type", "path": "/events"},
            )
        if not events:
            raise HttpError(422, "events: the batch is empty", {"reason": "invalid_value", "path": "/events"})
        if len(events) > max_items:
            raise HttpError(
                422,
                f"events: {len(events)} events, the limit is {max_items} per request",
                {"reason": "invalid_value", "path": "/events"},
            )
        return events, "/events"
    if isinstance(body, dict):
        return [body], ""
    raise HttpError(
        422,
        f"expected a feedback event or {{\"events\": [...]}}, got {type(body).__name__}",
        {"reason": "not_an_object", "path": ""},
    )


def with_receipt_time(obj: Any, now: float) -> Any:
    """`obj` with `timestamp` set to `now` when it is absent (HTTP only; null stays an error,
    as the OpenAPI schema says)."""
    if isinstance(obj, dict) and "timestamp" not in obj:
        return {**obj, "timestamp": now}
    return obj


def validate(
    body: Any, max_items: int, max_event_bytes: int, max_future_skew: float = math.inf,
    now: float | None = None,
) -> tuple[list[Item], list[Rejection]]:
    """Valid items and rejections, in request order (the same contract as Kafka ingest)."""
    now = time.time() if now is None else now
    candidates, prefix = split_items(body, max_items)
    items: list[Item] = []
    rejected: list[Rejection] = []
    for i, obj in enumerate(candidates):
        where = f"{prefix}/{i}" if prefix else ""
        obj = with_receipt_time(obj, now)
        try:
            event = parse_feedback(obj)
            check_not_future(event.ts, now, max_future_skew)
            size = len(encode(obj))
            if size > max_event_bytes:
                raise ContractError(
                    "oversized", f"the event is {size} bytes, the limit is {max_event_bytes}"
                )
        except ContractError as exc:
            rejected.append(Rejection(i, exc.reason, exc.detail, _path(where, exc.detail, exc.reason)))
            continue
        items.append(Item(i, obj, event))
    return items, rejected
