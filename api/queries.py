"""Read side of the /v1 API: models seen, one prediction's audit trace, summaries.

Every query is bounded by an index: the model list walks the (model, ts) index
one distinct model at a time (a loose index scan) instead of grouping the whole
table, and counts only cover recent windows, so the cost does not grow with
the number of stored predictions.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select, text

from modelmon.store.tables import (
    feedback,
    ingest_conflicts,
    monitor_runs,
    predictions,
    rollup_requests,
)

RECENT_WINDOWS = {"1h": 3600.0, "24h": 86400.0}
MAX_CONFLICTS_SHOWN = 20

# Distinct models in O(models * log n): each step asks the index for the next name.
_DISTINCT_MODELS = text(
    """
    WITH RECURSIVE seen(model) AS (
        SELECT MIN(model) FROM predictions
        UNION ALL
        SELECT (SELECT MIN(p.model) FROM predictions p WHERE p.model > seen.model)
        FROM seen WHERE seen.model IS NOT NULL
    )
    SELECT model FROM seen WHERE model IS NOT NULL
    """
)


def rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return None


def moment(ts: float | None) -> dict[str, Any] | None:
    """A time both ways: RFC 3339 for people, epoch seconds for programs."""
    if ts is None:
        return None
    return {"timestamp": rfc3339(ts), "epoch": ts}


def finite(obj: Any) -> Any:
    """JSON-safe copy: NaN and infinities (which JSON lacks) become None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def _position(row: Any) -> dict[str, Any] | None:
    if row.topic is None:
        return None
    return {"topic": row.topic, "partition": row.partition, "offset": row.offset}


def model_exists(conn: Connection, model: str) -> bool:
    q = select(predictions.c.model).where(predictions.c.model == model).limit(1)
    return conn.execute(q).first() is not None


def _recent(conn: Connection, model: str, now: float, seconds: float, fine: int) -> int:
    """Predictions in the fine buckets of the last `seconds` (read from the rollups:
    the cost does not grow with the traffic)."""
    r = rollup_requests
    start = int((now - seconds) // fine) * fine
    q = select(func.coalesce(func.sum(r.c.n), 0)).where(
        r.c.model == model, r.c.res == fine, r.c.bucket >= start, r.c.bucket <= now
    )
    return int(conn.execute(q).scalar_one())


def list_models(conn: Connection, configured: list[str], now: float, fine: int = 60) -> list[dict[str, Any]]:
    seen = [r[0] for r in conn.execute(_DISTINCT_MODELS)]
    out = []
    for name in sorted(set(seen) | set(configured)):
        entry: dict[str, Any] = {"name": name, "configured": name in configured}
        if name in seen:
            by_model = predictions.c.model == name
            first, last = (
                conn.execute(select(func.min(predictions.c.ts)).where(by_model)).scalar(),
                # never past now: a far-future timestamp must not read as fresh
                conn.execute(select(func.max(predictions.c.ts)).where(by_model, predictions.c.ts <= now)).scalar(),
            )
            counts = {label: _recent(conn, name, now, seconds, fine) for label, seconds in RECENT_WINDOWS.items()}
        else:
            first = last = None
            counts = dict.fromkeys(RECENT_WINDOWS, 0)
        entry["first_prediction"] = moment(first)
        entry["last_prediction"] = moment(last)
        entry["predictions_recent"] = counts
        out.append(entry)
    return out


def _conflicts(conn: Connection, model: str, request_id: str) -> list[dict[str, Any]]:
    q = (
        select(ingest_conflicts)
        .where(ingest_conflicts.c.model == model, ingest_conflicts.c.request_id == request_id)
        .order_by(ingest_conflicts.c.received_at)
        .limit(MAX_CONFLICTS_SHOWN)
    )
    return [
        {
            "kind": r.kind,
            "received_at": moment(r.received_at),
            "kafka": _position(r),
            "stored_digest": r.stored_digest,
            "new_digest": r.new_digest,
        }
        for r in conn.execute(q)
    ]


def prediction_trace(conn: Connection, model: str, request_id: str) -> dict[str, Any] | None:
    """Everything stored about one prediction and its label, or None."""
    p = conn.execute(
        select(predictions).where(predictions.c.model == model, predictions.c.request_id == request_id)
    ).first()
    if p is None:
        return None
    f = conn.execute(
        select(feedback).where(feedback.c.model == model, feedback.c.request_id == request_id)
    ).first()
    label = None
    if f is not None or p.label is not None:
        label = {
            "value": p.label if p.label is not None else f.label,
            "time": moment(p.label_ts if p.label_ts is not None else f.ts),
            "source": f.source if f is not None else None,
            "received_at": moment(f.ingested_at) if f is not None else None,
            "kafka": _position(f) if f is not None else None,
        }
    return finite(
        {
            "model": p.model,
            "request_id": p.request_id,
            "model_version": p.model_version,
            "time": moment(p.ts),
            "prediction": p.prediction,
            "scores": p.scores,
            "score_pred": p.score_pred,
            "score_max": p.score_max,
            "entropy": p.entropy,
            "latency_seconds": p.latency_seconds,
            "status": p.status,
            "slices": p.slices,
            "features": p.features,
            "schema_version": p.schema_version,
            "digest": p.digest,
            "kafka": _position(p),
            "ingested_at": moment(p.ingested_at),
            "label": label,
            "conflicting_duplicates": _conflicts(conn, model, request_id),
        }
    )


def feedback_only(conn: Connection, model: str, request_id: str) -> bool:
    """Whether a label arrived for a prediction that is not (yet) stored."""
    q = select(feedback.c.id).where(feedback.c.model == model, feedback.c.request_id == request_id)
    return conn.execute(q).first() is not None


def monitor_run_status(conn: Connection, model: str) -> list[dict[str, Any]]:
    q = select(monitor_runs).where(monitor_runs.c.model == model).order_by(monitor_runs.c.monitor)
    return [
        {
            "monitor": r.monitor,
            "last_success": moment(r.last_success),
            "last_attempt": moment(r.last_attempt),
            "last_error": r.last_error,
            "last_duration_seconds": r.last_duration_seconds,
        }
        for r in conn.execute(q)
    ]
