"""Predictions keyed (model, request_id, ts), partitioned by time on PostgreSQL:
a repeat with another timestamp is still one stored prediction (a conflict);
partitions are made ahead, take over DEFAULT's rows, and retention drops them
whole; the monitors give the same numbers across a partition boundary."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from modelmon.config import Config
from modelmon.contract import parse_prediction
from modelmon.monitors import latency, shift
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.partitions import DEFAULT, create_partition, is_partitioned, partitions
from modelmon.store.retention import run_retention
from modelmon.store.rollups import Specs
from modelmon.store.tables import ingest_conflicts, predictions
from modelmon.store.writes import Position, write_batch

WEEK = 7 * 86400.0
NOW = 1_800_000_000.0 + 0.5 * WEEK
CFG = Config.model_validate({
    "rollups": {"fine": "1m", "coarse": "1h"},
    "retention": {"batch_rows": 100_000, "predictions": "7d", "fine_buckets": "35d", "partition": "7d"},
    "models": {"m": {
        "windows": ["1h", "1d"], "min_samples": 20,
        "slos": [{"name": "fast", "kind": "latency", "objective": 0.99, "threshold": "250ms", "period": "14d"}],
    }},
})


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    upgrade(eng, cfg=CFG)
    yield eng
    eng.dispose()


def _pred(rid: str, ts: float, latency_ms: float = 20.0, prediction: str = "a"):
    return parse_prediction({
        "request_id": rid, "model": "m", "timestamp": ts, "prediction": prediction, "latency_ms": latency_ms,
        "model_version": "v1",
    })


def _write(engine: sa.Engine, preds, offset0: int = 0):
    with engine.begin() as conn:
        return write_batch(
            conn, [(p, Position("t", 0, offset0 + i)) for i, p in enumerate(preds)], [], [], specs=Specs(CFG)
        )


def test_a_repeat_with_another_timestamp_is_a_conflict_not_a_second_row(engine: sa.Engine) -> None:
    first = _write(engine, [_pred("r1", NOW - 100)])
    assert first.predictions_stored == 1
    again = _write(engine, [_pred("r1", NOW - 100)], offset0=10)  # redelivered: a duplicate
    other = _write(engine, [_pred("r1", NOW - 50)], offset0=20)  # same request, other time
    assert (again.predictions_stored, again.duplicates, again.conflicts) == (0, 1, 0)
    assert (other.predictions_stored, other.duplicates, other.conflicts) == (0, 0, 1)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(predictions.c.ts).where(predictions.c.request_id == "r1")).all()
        assert rows == [(NOW - 100,)]
        assert conn.execute(sa.select(sa.func.count()).select_from(ingest_conflicts)).scalar_one() == 1


def _monitor_values(conn: sa.Connection) -> dict:
    model = CFG.model("m")
    return {
        (wr.window.name, wr.row.metric, wr.row.model_version, wr.row.slice_key): (wr.row.value, wr.row.sample_count)
        for family in (latency, shift)
        for wr in family.collect(conn, model, NOW)
    }


def test_partitions_retention_and_monitors_across_a_boundary(engine: sa.Engine) -> None:
    rng = np.random.default_rng(3)
    ts = rng.uniform(NOW - 2.5 * WEEK, NOW, size=3000)
    lat = rng.lognormal(-2.5, 1.0, size=3000) * 1000
    preds = [_pred(f"r{i}", float(t), float(x), str(rng.choice(["a", "b"]))) for i, (t, x) in enumerate(zip(ts, lat, strict=True))]
    for k in range(0, len(preds), 500):
        _write(engine, preds[k : k + 500], offset0=k)
    with engine.connect() as conn:
        before = _monitor_values(conn)
        pg = is_partitioned(conn)
    # The 14-day SLO spans partitions (and, on PostgreSQL, DEFAULT, since these
    # timestamps are in the future of the machine's clock): the exact reference.
    period = [(t, x) for t, x in zip(ts, lat, strict=True) if t >= NOW - 14 * 86400]
    good = sum(x <= 250.0 for _, x in period)
    sli = before[("14d", "slo_sli_ratio", "*", "slo=fast")]
    assert sli == (pytest.approx(good / len(period), rel=1e-12), len(period))

    if pg:
        with engine.begin() as conn:
            assert conn.exec_driver_sql(f"SELECT count(*) FROM {DEFAULT}").scalar_one() == 3000
            # Partitions made later take over DEFAULT's rows of their span.
            first = int((NOW - 2.5 * WEEK) // WEEK) * WEEK
            for start in (first, first + WEEK, first + 2 * WEEK):
                create_partition(conn, start, start + WEEK)
            moved = conn.exec_driver_sql(f"SELECT count(*) FROM {DEFAULT}").scalar_one()
            assert moved == 0
            assert [p[1] for p in partitions(conn)][-3:] == [first, first + WEEK, first + 2 * WEEK]

    deleted = run_retention(engine, CFG, NOW)
    cutoff = NOW - WEEK
    assert deleted["predictions"] == int((ts < cutoff).sum())
    with engine.connect() as conn:
        left = conn.execute(sa.select(sa.func.count(), sa.func.min(predictions.c.ts))).one()
        assert left[0] == int((ts >= cutoff).sum()) and left[1] >= cutoff
        if pg:  # the oldest week went as a whole partition
            assert first not in [p[1] for p in partitions(conn)]
        # The monitors read rollups, which outlive the raw rows: nothing changed.
        assert _monitor_values(conn) == before
