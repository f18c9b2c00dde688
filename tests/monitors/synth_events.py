"""Synthetic predictions written straight into a migrated store, for the
shift / latency / scheduler tests. The same rows feed the independent
computations (numpy, scipy, evidently), so both sides see the same events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.tables import predictions

NOW = 1_800_000_000.0


def events(
    rng: np.random.Generator,
    n: int,
    classes: Sequence[str],
    weights: Sequence[float] | None = None,
    *,
    start: float,
    end: float,
    model: str = "m",
    label_share: float = 0.0,
    label_weights: Sequence[float] | None = None,
    error_share: float = 0.0,
    no_latency_share: float = 0.0,
    prefix: str = "r",
) -> list[dict[str, Any]]:
    p = None if weights is None else np.asarray(weights, float) / np.sum(weights)
    lp = None if label_weights is None else np.asarray(label_weights, float) / np.sum(label_weights)
    preds = rng.choice(list(classes), size=n, p=p)
    labels = rng.choice(list(classes), size=n, p=lp)
    ts = rng.uniform(start, end, size=n)
    lat = rng.lognormal(-2.0, 0.7, size=n)
    out = []
    for i in range(n):
        labelled = rng.random() < label_share
        err = rng.random() < error_share
        out.append(
            {
                "model": model,
                "model_version": "v1",
                "request_id": f"{prefix}{i}",
                "ts": float(ts[i]),
                "prediction": str(preds[i]),
                "latency_seconds": None if rng.random() < no_latency_share else float(lat[i]),
                "status": "error" if err else "ok",
                "schema_version": 1,
                "label": str(labels[i]) if labelled else None,
                "label_ts": float(ts[i]) + 60.0 if labelled else None,
                "digest": "d",
                "ingested_at": float(ts[i]),
            }
        )
    return out


def migrated_engine(url: str) -> sa.Engine:
    engine = make_engine(url)
    upgrade(engine)
    return engine


def store(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(predictions.insert(), rows[i : i + 5000])


def in_range(
    rows: list[dict[str, Any]], start: float, end: float, model: str = "m"
) -> list[dict[str, Any]]:
    return [r for r in rows if r["model"] == model and start <= r["ts"] < end]
