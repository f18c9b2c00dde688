"""Retention: per table, rows past their age go and newer ones stay; each run
deletes at most `retention.batch_rows` per table (a backlog takes several runs);
the predictions mark moves only once no older raw row is left; on SQLite and
PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from modelmon.config import Config
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.retention import advice, check, cutoffs, run_retention
from modelmon.store.tables import (
    ROLLUP_TABLES,
    dead_letters,
    feedback,
    ingest_conflicts,
    monitor_latest,
    monitor_results,
    predictions,
    retention_marks,
)

NOW = 1_800_000_000.0  # a whole hour
DAY = 86400.0
CFG = Config.model_validate({
    "rollups": {"fine": "1m", "coarse": "1h"},
    "retention": {
        "batch_rows": 100, "predictions": "1d", "feedback": "2d", "dead_letters": "3d", "conflicts": "4d",
        "results": "5d", "fine_buckets": "6d", "coarse_buckets": "20d",
    },
})
CUT = cutoffs(CFG, NOW)

# Plain tables: (table, time column, `retention` setting)
PLAIN = (
    (predictions, "ts", "predictions"),
    (feedback, "ingested_at", "feedback"),
    (dead_letters, "received_at", "dead_letters"),
    (ingest_conflicts, "received_at", "conflicts"),
    (monitor_results, "computed_at", "results"),
    (monitor_latest, "computed_at", "results"),
)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def plain_row(table: sa.Table, i: int, at: float, model: str = "m") -> dict[str, Any]:
    """A valid row of `table` whose time column is `at`."""
    rid = f"{model}-{i}-{at}"
    if table is predictions:
        return {"model": model, "model_version": "v1", "request_id": rid, "ts": at, "prediction": "a",
                "status": "ok", "schema_version": 1, "digest": "d", "ingested_at": NOW}
    if table is feedback:
        return {"model": model, "request_id": rid, "label": "a", "ts": at, "source": "http", "digest": "d",
                "ingested_at": at}
    if table is dead_letters:
        return {"source": "http", "reason": "invalid", "detail": rid, "payload_bytes": 0, "received_at": at}
    if table is ingest_conflicts:
        return {"kind": "prediction", "model": model, "request_id": rid, "stored_digest": "a", "new_digest": "b",
                "received_at": at}
    return {"model": model, "model_version": "*", "monitor": "shift", "metric": f"x{i}", "window": "1h",
            "slice": "", "labels": {}, "window_start": at - 3600, "window_end": at, "value": 1.0,
            "sample_count": 1, "status": "ok", "computed_at": at}


def rollup_row(table: sa.Table, res: int, bucket: int, model: str = "m") -> dict[str, Any]:
    row: dict[str, Any] = {"model": model, "res": res, "bucket": bucket, "model_version": "v1"}
    for c in table.columns:
        if c.name not in row:
            row[c.name] = "k" if isinstance(c.type, sa.String) else 0
    return row


def insert(engine: sa.Engine, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        with engine.begin() as conn:
            conn.execute(table.insert(), rows)


def times(engine: sa.Engine, table: sa.Table, column: str) -> list[float]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(table.c[column])).scalars())


def rollup_keys(engine: sa.Engine, table: sa.Table) -> set[tuple[str, int, int]]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(sa.select(table.c.model, table.c.res, table.c.bucket))}


def mark(engine: sa.Engine, table: str = "predictions") -> float | None:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(retention_marks.c.before).where(retention_marks.c.table_name == table)
        ).scalar()


def test_rows_older_than_each_cutoff_go_and_newer_ones_stay(engine: sa.Engine) -> None:
    kept: dict[str, list[float]] = {}
    for table, _, setting in PLAIN:
        cut = CUT[setting]
        old = [cut - 10 * DAY, cut - 1.0, cut - 0.001]
        new = [cut, cut + 1.0, NOW]
        models = ("a", "b") if "model" in table.c and table is not monitor_latest else ("a",)
        rows = [plain_row(table, i, at, model) for model in models for i, at in enumerate(old + new)]
        if table is monitor_latest:  # one row per (job, metric): vary the monitor instead
            rows = [dict(r, monitor=f"mon{i}") for i, r in enumerate(rows)]
        insert(engine, table, rows)
        kept[table.name] = sorted(new * len(models))
    fine, coarse = CUT["fine_buckets"], CUT["coarse_buckets"]
    for table in ROLLUP_TABLES:
        insert(engine, table, [
            rollup_row(table, 60, int(fine - 3600), "a"),  # gone
            rollup_row(table, 60, int(fine - 60), "b"),  # ends at the cutoff: gone
            rollup_row(table, 60, int(fine), "a"),  # starts at it: kept
            rollup_row(table, 60, int(NOW - 60), "b"),
            rollup_row(table, 3600, int(fine - 3600), "a"),  # older than fine, newer than coarse: kept
            rollup_row(table, 3600, int(coarse - 3600), "b"),  # gone
            rollup_row(table, 3600, int(coarse - 7200), "a"),  # gone
            rollup_row(table, 3600, int(coarse), "b"),  # kept
        ])

    deleted = run_retention(engine, CFG, NOW)

    for table, column, _ in PLAIN:
        assert times(engine, table, column) == kept[table.name], table.name
        assert deleted[table.name] == len(kept[table.name]), table.name
    for table in ROLLUP_TABLES:
        assert rollup_keys(engine, table) == {
            ("a", 60, int(fine)), ("b", 60, int(NOW - 60)), ("a", 3600, int(fine - 3600)), ("b", 3600, int(coarse)),
        }, table.name
        assert deleted[table.name] == 4
    # A second run finds nothing more to do.
    assert not any(run_retention(engine, CFG, NOW).values())


def test_a_bucket_straddling_the_cutoff_is_kept(engine: sa.Engine) -> None:
    now = NOW + 30  # the fine cutoff falls inside a bucket
    fine = cutoffs(CFG, now)["fine_buckets"]
    start = int(fine // 60 * 60)
    insert(engine, ROLLUP_TABLES[0], [rollup_row(ROLLUP_TABLES[0], 60, b) for b in (start - 60, start, start + 60)])
    assert run_retention(engine, CFG, now)[ROLLUP_TABLES[0].name] == 1
    assert {b for _, _, b in rollup_keys(engine, ROLLUP_TABLES[0])} == {start, start + 60}


def test_each_run_deletes_at_most_batch_rows_per_table(engine: sa.Engine) -> None:
    """150 old rows per table (spread over two models where there are models): two runs."""
    for table, _, setting in PLAIN:
        cut = CUT[setting]
        rows = [plain_row(table, i, cut - 1000 + i, "a" if i < 90 else "b") for i in range(150)]
        rows += [plain_row(table, 1000 + i, NOW - i, "a") for i in range(5)]
        if table is monitor_latest:
            rows = [dict(r, monitor=f"mon{i}") for i, r in enumerate(rows)]
        insert(engine, table, rows)
    fine, coarse = int(CUT["fine_buckets"]), int(CUT["coarse_buckets"])
    for table in ROLLUP_TABLES:
        rows = [rollup_row(table, 60, fine - 60 * (1 + i), "a" if i < 40 else "b") for i in range(100)]
        rows += [rollup_row(table, 3600, coarse - 3600 * (1 + i), "b") for i in range(50)]
        rows += [rollup_row(table, 60, fine + 60 * i, "a") for i in range(5)]
        insert(engine, table, rows)

    first = run_retention(engine, CFG, NOW)
    assert set(first.values()) == {100}, first
    # Oldest first: what is left of the old predictions is the newest of them.
    left = times(engine, predictions, "ts")
    assert [t for t in left if t < CUT["predictions"]] == [CUT["predictions"] - 1000 + i for i in range(100, 150)]
    assert mark(engine) is None  # old raw rows remain
    second = run_retention(engine, CFG, NOW)
    assert set(second.values()) == {50}, second
    assert mark(engine) == CUT["predictions"]
    for table, column, _ in PLAIN:
        assert len(times(engine, table, column)) == 5, table.name
    for table in ROLLUP_TABLES:
        assert len(rollup_keys(engine, table)) == 5, table.name
    assert not any(run_retention(engine, CFG, NOW).values())


def test_the_predictions_mark_moves_forward_only_when_nothing_older_remains(engine: sa.Engine) -> None:
    cut = CUT["predictions"]
    stored = [cut - 120 + i for i in range(160)]  # 120 old rows, 40 newer ones
    insert(engine, predictions, [plain_row(predictions, i, t, "a") for i, t in enumerate(stored)])
    run_retention(engine, CFG, NOW)
    assert mark(engine) is None  # 100 of the 120 old rows deleted: not yet
    run_retention(engine, CFG, NOW)
    assert mark(engine) == cut
    # A longer retention (or an earlier clock) never moves the mark back: those rows are gone.
    longer = Config.model_validate({**CFG.model_dump(), "retention": {**CFG.retention.model_dump(), "predictions": "3d"}})
    run_retention(engine, longer, NOW)
    assert mark(engine) == cut
    run_retention(engine, CFG, NOW + 3600)
    assert mark(engine) == cut + 3600
    assert times(engine, predictions, "ts") == [t for t in stored if t >= cut + 3600]
    # The rebuild reads the same mark.
    from modelmon.store.rebuild import raw_watermark

    with engine.connect() as conn:
        assert raw_watermark(conn) == cut + 3600


def test_an_empty_store_is_a_no_op_that_still_marks(engine: sa.Engine) -> None:
    out = run_retention(engine, CFG, NOW)
    assert set(out) == {t.name for t, _, _ in PLAIN} | {t.name for t in ROLLUP_TABLES}
    assert not any(out.values())
    assert mark(engine) == CUT["predictions"]


def test_advice_on_unlikely_settings(caplog: pytest.LogCaptureFixture) -> None:
    assert advice(Config()) == []
    cfg = Config.model_validate({
        "retention": {"predictions": "30d", "fine_buckets": "7d", "coarse_buckets": "5d"},
        "models": {"m": {"slos": [{"name": "e", "kind": "error_rate", "objective": 0.99, "period": "28d"}]}},
    })
    with caplog.at_level(logging.WARNING, logger="modelmon.store.retention"):
        notes = check(cfg)
    assert len(notes) == 3
    assert "retention.fine_buckets (7d) is shorter than retention.predictions (30d)" in caplog.text
    assert "retention.coarse_buckets (5d) is shorter than retention.fine_buckets (7d)" in caplog.text
    assert "(28d) is longer than retention.coarse_buckets" in caplog.text
    assert check(cfg.model_copy(update={"retention": cfg.retention.model_copy(update={"enabled": False})})) == []
