"""Monitors stay right across a retention boundary: raw predictions older than
their retention are deleted, but the rollups (kept longer) still answer a
6-day SLO period and the current windows with the same numbers, on SQLite and
PostgreSQL; a rebuild afterwards leaves the buckets of deleted rows alone."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from modelmon.config import Config
from modelmon.monitors import latency, shift
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.rebuild import rebuild
from modelmon.store.retention import run_retention
from modelmon.store.rollups import Specs
from modelmon.store.tables import predictions

NOW = 1_800_000_000.0
DAY = 86400.0
CFG = Config.model_validate({
    "rollups": {"fine": "1m", "coarse": "1h"},
    "retention": {"batch_rows": 100_000, "predictions": "1d", "fine_buckets": "7d", "coarse_buckets": "30d"},
    "models": {"m": {
        "windows": ["1h", "1d"], "min_samples": 20,
        "slos": [{"name": "fast", "kind": "latency", "objective": 0.99, "threshold": "250ms", "period": "6d"}],
    }},
})


def _rows(rng: np.random.Generator, n: int) -> list[dict]:
    ts = rng.uniform(NOW - 5.5 * DAY, NOW, size=n)
    lat = rng.lognormal(-2.0, 0.8, size=n)
    return [
        {
            "model": "m", "model_version": "v1" if i % 3 else "v2", "request_id": f"r{i}", "ts": float(ts[i]),
            "prediction": str(rng.choice(["a", "b", "c"])), "latency_seconds": float(lat[i]),
            "status": "error" if rng.random() < 0.02 else "ok", "schema_version": 1,
            "digest": "d", "ingested_at": float(ts[i]),
        }
        for i in range(n)
    ]


def _values(conn: sa.Connection) -> dict[tuple, float | None]:
    model = CFG.model("m")
    out = {}
    for family in (latency, shift):
        for wr in family.collect(conn, model, NOW):
            r = wr.row
            out[(wr.window.name, r.metric, r.model_version, r.slice_key)] = (r.value, r.sample_count, r.status)
    return out


@pytest.mark.integration
def test_monitors_unchanged_after_raw_rows_are_pruned(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        rows = _rows(np.random.default_rng(5), 6000)
        with engine.begin() as conn:
            conn.execute(predictions.insert(), rows)
        rebuild(engine, Specs(CFG), "m")
        with engine.connect() as conn:
            before = _values(conn)
        # The SLO covers 6 days, raw rows older than 1 day are to go.
        sli = before[("6d", "slo_sli_ratio", "*", "slo=fast")]
        counted = [r for r in rows if r["status"] == "error" or r["latency_seconds"] is not None]
        bad = sum(r["status"] == "error" or r["latency_seconds"] > 0.25 for r in counted)
        assert sli[0] == pytest.approx(1 - bad / len(counted), rel=1e-12) and sli[1] == len(counted)

        deleted = run_retention(engine, CFG, NOW)
        old = sum(r["ts"] < NOW - DAY for r in rows)
        assert deleted["predictions"] == old > 4000
        with engine.connect() as conn:
            left = conn.execute(sa.select(sa.func.count(), sa.func.min(predictions.c.ts)).select_from(predictions)).one()
            assert left[0] == len(rows) - old and left[1] >= NOW - DAY
            assert _values(conn) == before
        # A rebuild now starts after the raw rows that are left: it cannot undo the past.
        rebuild(engine, Specs(CFG), "m")
        with engine.connect() as conn:
            assert _values(conn) == before
    finally:
        engine.dispose()
