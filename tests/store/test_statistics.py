"""Ingest keeps the planner statistics of the partitions it fills current, so the
per-event uniqueness probe goes through the primary key of a partition that
autovacuum has not analyzed yet (without it, the planner may take the (model, ts)
index and read every row of the model per event)."""

from __future__ import annotations

import math

import pytest
import sqlalchemy as sa

from modelmon.contract import parse_prediction
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.partitions import DEFAULT
from modelmon.store.statistics import PartitionAnalyzer
from modelmon.store.writes import Position, write_batch

TS = 1_500_000_000.0  # years before any partition upgrade makes: every row lands in DEFAULT
PROBE = "EXPLAIN SELECT 1 FROM predictions p WHERE p.model = 'm' AND p.request_id = 'r-00000001' LIMIT 1"


@pytest.fixture
def engine(pg_url: str):
    eng = make_engine(pg_url)
    upgrade(eng)
    with eng.begin() as conn:  # nothing but the code under test may analyze
        conn.exec_driver_sql(f"ALTER TABLE {DEFAULT} SET (autovacuum_enabled = false)")
    yield eng
    eng.dispose()


def _store(engine: sa.Engine, start: int, n: int) -> list[float]:
    preds = [
        (parse_prediction({"request_id": f"r-{i:08d}", "model": "m", "timestamp": TS + i,
                           "prediction": "a", "latency_ms": 5}), Position("t", 0, i))
        for i in range(start, start + n)
    ]
    with engine.begin() as conn:
        out = write_batch(conn, preds, [], [])
    return [p.ts for p in out.stored_predictions]


def _default_probe_index(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        plan = "\n".join(row[0] for row in conn.exec_driver_sql(PROBE))
    return next(line for line in plan.splitlines() if f"on {DEFAULT} " in line)


def _reltuples(engine: sa.Engine) -> float:
    with engine.connect() as conn:
        return float(conn.exec_driver_sql(
            "SELECT reltuples FROM pg_class WHERE relname = %s", (DEFAULT,)).scalar_one())


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {DEFAULT}").scalar_one())


@pytest.mark.integration
def test_unanalyzed_partition_is_probed_through_the_wrong_index(engine: sa.Engine) -> None:
    """The problem the analyzer exists for (PostgreSQL 15's planner, no statistics)."""
    for k in range(3):
        _store(engine, k * 1000, 1000)
    assert _reltuples(engine) < 0  # never analyzed
    assert "model_ts" in _default_probe_index(engine)


@pytest.mark.integration
def test_analyzer_keeps_the_primary_key_probe_with_logarithmically_many_analyzes(
    engine: sa.Engine,
) -> None:
    analyzer = PartitionAnalyzer(min_rows=500)
    total = 0
    for k in range(20):
        ran = analyzer.stored(engine, _store(engine, k * 500, 500))
        total += 500
        if ran:  # ANALYZE of a table this small reads every row: its size is exact
            assert ran == [DEFAULT]
            assert _reltuples(engine) == _count(engine) == total
        assert "pkey" in _default_probe_index(engine), f"after {total} rows"
    # One ANALYZE each time the rows stored since the last reach the analyzed size.
    assert 1 <= len(analyzer.analyzed) <= math.ceil(math.log2(total / 500)) + 1


def test_other_stores_need_nothing(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine)
    assert PartitionAnalyzer().stored(engine, [TS]) == []
