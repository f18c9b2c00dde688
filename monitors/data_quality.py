"""The `data_quality` family: per-feature missing, type-change, unseen-category and
out-of-range shares against the reference, and the share of predictions carrying features
(modelmon.monitors.features; computed in the feature worker process)."""

from __future__ import annotations

import sqlalchemy as sa

from modelmon.config import ResolvedModel
from modelmon.monitors.base import WindowedRow
from modelmon.monitors.feature_worker import collect as _collect


def collect(conn: sa.Connection, model: ResolvedModel, now: float) -> list[WindowedRow]:
    return _collect("data_quality", conn, model, now)
