"""Synthetic predictions for the quality-monitor tests, kept as plain dicts.

The same list is written to the store (through SQLAlchemy, into a database
migrated by modelmon.store.migrate.upgrade) and handed to the independent
reference computations (numpy, scikit-learn, fairlearn), so both sides see
exactly the same events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from modelmon.config import Config
from modelmon.contract import score_summary
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.tables import predictions

NOW = 1_800_000_000.0
HOUR = 3600.0


def model_settings(**overrides: Any):
    """A ResolvedModel named "m" with one 1h window unless told otherwise."""
    settings = {"windows": ["1h"], "min_samples": 50, "min_labels": 50, "min_slice_samples": 30}
    settings.update(overrides)
    return Config.model_validate({"models": {"m": settings}}).model("m")


def make_events(
    rng: np.random.Generator,
    n: int,
    classes: Sequence[str],
    *,
    label_share: float = 0.6,
    error_share: float = 0.0,
    off_argmax_share: float = 0.15,
    single_score: str | None = None,
    slices: dict[str, tuple[Sequence[str], Sequence[float]]] | None = None,
    missing_share: float = 0.0,
    start: float = NOW - HOUR,
    end: float = NOW,
    model: str = "m",
) -> list[dict[str, Any]]:
    """Predictions with scores, delayed labels and slice attributes.

    The predicted class is the top-scoring one except for `off_argmax_share` of
    rows (so score_pred != score_max is exercised); scores are keyed by class
    name in a shuffled order. With `single_score`, only that class's
    probability is logged (the binary one-score form).
    """
    k = len(classes)
    truth = rng.integers(k, size=n)
    alpha = np.ones((n, k))
    alpha[np.arange(n), truth] += 2.5 * rng.random(n)
    gam = rng.gamma(alpha)
    probs = gam / gam.sum(axis=1, keepdims=True)
    off = rng.random(n) < off_argmax_share
    other = rng.integers(k, size=n)
    ts = rng.uniform(start, end, size=n)
    labelled = rng.random(n) < label_share
    delays = rng.exponential(600.0, size=n)
    errors = rng.random(n) < error_share
    drawn = {
        attr: (
            rng.choice(np.asarray(values), size=n, p=np.asarray(w) / np.sum(w)),
            rng.random(n) < missing_share,
        )
        for attr, (values, w) in (slices or {}).items()
    }
    events = []
    for i in range(n):
        if single_score is not None:
            p = float(probs[i, list(classes).index(single_score)])
            scores = {single_score: p}
            full = {c: (p if c == single_score else 1.0 - p) for c in classes}
        else:
            scores = {classes[j]: float(probs[i, j]) for j in rng.permutation(k)}
            full = scores
        top = max(full, key=full.get)
        predicted = classes[int(other[i])] if off[i] else top
        score_pred, score_max, entropy = score_summary(scores, predicted)
        sl = {a: str(v[i]) for a, (v, miss) in drawn.items() if not miss[i]} or None
        events.append(
            {
                "model": model,
                "model_version": "v1" if i % 2 else "v2",
                "request_id": f"r{i}",
                "ts": float(ts[i]),
                "prediction": predicted,
                "scores": scores,
                "score_pred": score_pred,
                "score_max": score_max,
                "entropy": entropy,
                "latency_seconds": 0.01,
                "status": "error" if errors[i] else "ok",
                "slices": sl,
                "features": None,
                "schema_version": 1,
                "label": classes[int(truth[i])] if labelled[i] else None,
                "label_ts": float(ts[i] + delays[i]) if labelled[i] else None,
                "digest": f"d{i}",
                "ingested_at": float(ts[i]),
            }
        )
    return events


def store(url: str, events: Sequence[dict[str, Any]]) -> sa.Engine:
    """A migrated database at `url` holding `events`."""
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:
        for i in range(0, len(events), 5000):
            conn.execute(predictions.insert(), list(events[i : i + 5000]))
    return engine


def in_window(events: Sequence[dict[str, Any]], start: float, end: float, model: str = "m"):
    """The events a monitor should see: this model, ts in [start, end), status ok."""
    return [
        e for e in events if e["model"] == model and start <= e["ts"] < end and e["status"] == "ok"
    ]


def rows_by_key(windowed_rows, window: str | None = None, version: str = "*") -> dict[tuple, Any]:
    """{(metric, sorted label items): MetricRow} for one window and model version."""
    out = {}
    for wr in windowed_rows:
        if window is not None and wr.window.name != window:
            continue
        if wr.row.model_version != version:
            continue
        key = (wr.row.metric, tuple(sorted(wr.row.labels.items())))
        assert key not in out, f"duplicate row {key}"
        out[key] = wr.row
    return out
