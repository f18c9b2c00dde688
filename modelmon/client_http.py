"""Feedback over HTTP, for services that cannot produce to Kafka.

Standard library only, so a support tool or batch job needs nothing but
modelmon installed. Unlike `ModelmonClient.log_prediction`, this is not on a
request path: it blocks until modelmon has accepted the events (they are then
durable in Kafka or in the store) and raises on failure, so the caller knows
whether to retry. Retrying the same events is safe: modelmon deduplicates them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any


class FeedbackHTTPError(Exception):
    """modelmon refused the feedback or could not be reached.

    `status` is the HTTP status (None when no reply arrived), `reply` the parsed
    JSON reply when there was one (for 422 it lists every rejected event).
    """

    def __init__(self, status: int | None, message: str, reply: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.reply = reply

    @property
    def retryable(self) -> bool:
        """True for failures a later retry can fix (no reply, 429, 5xx)."""
        return self.status is None or self.status == 429 or self.status >= 500


def send_feedback_http(
    url: str,
    token: str,
    events: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """POST feedback to `url` (the service's base URL, e.g. "http://modelmon:9464").

    `events` is one feedback event ({"request_id", "model", "label"} and optionally
    "timestamp": without it the server stamps the receipt time) or a list of them (sent as one batch, at most `server.max_feedback_batch`).
    Returns the reply: {"accepted": n, "rejected": [{"index", "reason",
    "detail", "path"}, ...], "destination": "kafka" | "store"}; events of a batch
    can be rejected while others are accepted, so check `rejected`. Raises
    FeedbackHTTPError on any non-2xx status (e.g. 401 bad token, 413 too large,
    422 nothing accepted, 503 Kafka or store down) or when modelmon cannot be
    reached within `timeout` seconds.
    """
    if isinstance(events, Mapping):
        body: Any = dict(events)
    else:
        body = {"events": [dict(e) for e in events]}
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    req = urllib.request.Request(
        url.rstrip("/") + "/v1/feedback",
        data=data,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Authorization": f"Bearer {token}",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            reply = json.loads(raw.decode("utf-8"))
            message = str(reply.get("error", exc.reason)) if isinstance(reply, dict) else str(exc.reason)
        except (UnicodeDecodeError, ValueError):
            reply, message = None, raw.decode("utf-8", "replace")[:200] or str(exc.reason)
        raise FeedbackHTTPError(exc.code, message, reply) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FeedbackHTTPError(None, f"cannot reach modelmon at {url}: {reason}") from exc
