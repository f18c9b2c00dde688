"""`modelmon db upgrade` on an empty store, then autogenerate finds nothing to change;
0002 down and up again; a store with predictions at 0001 gets its rollups backfilled."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from store.rollup_check import (  # tests/store, on sys.path through tests/conftest.py
    assert_rollups_match_raw,
    feedback_obj,
    prediction_obj,
    rollup_config,
    stored_rollups,
)

from modelmon.contract import parse_feedback, parse_prediction
from modelmon.store.engine import make_engine
from modelmon.store.migrate import alembic_config, current, upgrade
from modelmon.store.partitions import include_name
from modelmon.store.tables import metadata

HEAD = "0005"
NEW_IN_0002 = {
    "monitor_latest", "retention_marks", "slice_values", "rollup_requests", "rollup_classes",
    "rollup_calibration", "rollup_slices", "rollup_latency_good", "rollup_sketches",
}


def _diff(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
        return compare_metadata(ctx, metadata)


def test_upgrade_then_autogenerate_finds_no_difference(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        assert current(engine) == HEAD
        diff = _diff(engine)
        tables = set(sa.inspect(engine).get_table_names())
        assert diff == []
        assert set(metadata.tables) <= tables
        upgrade(engine)  # a second upgrade is a no-op
        assert current(engine) == HEAD
    finally:
        engine.dispose()


def _downgrade(engine: sa.Engine, revision: str) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def test_0002_downgrades_to_0001_and_upgrades_again(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        _downgrade(engine, "0001")
        assert current(engine) == "0001"
        insp = sa.inspect(engine)
        assert not NEW_IN_0002 & set(insp.get_table_names())
        assert "last_history" not in {c["name"] for c in insp.get_columns("monitor_runs")}
        assert "ix_ingest_conflicts_received_at" not in {
            i["name"] for i in insp.get_indexes("ingest_conflicts")
        }
        upgrade(engine)
        assert current(engine) == HEAD
        assert _diff(engine) == []
    finally:
        engine.dispose()


def test_store_has_the_indexes_ingest_and_monitors_rely_on(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        insp = sa.inspect(engine)
        assert insp.get_pk_constraint("predictions")["constrained_columns"] == ["model", "request_id", "ts"]
        assert ("model", "request_id") in {
            tuple(u["column_names"]) for u in insp.get_unique_constraints("feedback")
        }
        assert ("topic", "partition", "offset") in {
            tuple(u["column_names"]) for u in insp.get_unique_constraints("dead_letters")
        }
        assert ["model", "ts"] in [i["column_names"] for i in insp.get_indexes("predictions")]
        assert ["received_at"] in [i["column_names"] for i in insp.get_indexes("ingest_conflicts")]
        assert insp.get_pk_constraint("rollup_classes")["constrained_columns"] == [
            "model", "res", "bucket", "model_version", "prediction", "label",
        ]
    finally:
        engine.dispose()


def _insert_raw(engine: sa.Engine, n: int) -> None:
    """Rows as 0001-era ingest stored them: labelled and not, two versions, slices."""
    p = sa.table("predictions", *(sa.column(c) for c in (
        "model", "model_version", "request_id", "ts", "prediction", "scores", "score_pred",
        "score_max", "entropy", "latency_seconds", "status", "slices", "schema_version", "label",
        "label_ts", "digest", "ingested_at")))
    json_t = metadata.tables["predictions"].c.slices.type
    rows = []
    for model in ("m", "n"):
        for i in range(n if model == "m" else n // 3):
            x = parse_prediction(prediction_obj(i, model))
            f = parse_feedback(feedback_obj(i, model)) if i % 3 else None
            rows.append({
                "model": x.model, "model_version": x.model_version, "request_id": x.request_id,
                "ts": x.ts, "prediction": x.prediction, "scores": x.scores,
                "score_pred": x.score_pred, "score_max": x.score_max, "entropy": x.entropy,
                "latency_seconds": x.latency_seconds, "status": x.status, "slices": x.slices,
                "schema_version": 1, "label": f and f.label, "label_ts": f and f.ts,
                "digest": x.digest, "ingested_at": x.ts,
            })
    stmt = sa.insert(p).values({
        c: sa.bindparam(c, type_=json_t) if c in ("scores", "slices") else sa.bindparam(c)
        for c in rows[0]
    })
    with engine.begin() as conn:
        conn.execute(stmt, rows)


def test_upgrade_from_0001_backfills_the_rollups(db_url: str) -> None:
    cfg = rollup_config()
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
        _insert_raw(engine, 300)
        upgrade(engine, cfg=cfg)
        assert current(engine) == HEAD
        stored = assert_rollups_match_raw(engine, cfg)
        assert {k[0] for k in stored["rollup_requests"]} == {"m", "n"}
        assert stored["rollup_slices"] and stored["rollup_calibration"]
        assert {k[3] for k in stored["rollup_requests"]} == {"v1", "v2"}
        upgrade(engine, cfg=cfg)  # at head already: no second backfill
        assert stored_rollups(engine) == stored
    finally:
        engine.dispose()


def test_upgrade_of_an_empty_store_backfills_nothing(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
        upgrade(engine, cfg=rollup_config())
        assert all(not rows for rows in stored_rollups(engine).values())
    finally:
        engine.dispose()


def test_0003_keeps_every_prediction_and_partitions_them_on_postgres(db_url: str) -> None:
    """From 0002 to 0003 the table is rebuilt: every row comes through; on
    PostgreSQL the rows land in weekly partitions, not in DEFAULT."""
    from modelmon.store.partitions import DEFAULT, is_partitioned, partitions
    from modelmon.store.tables import predictions

    engine = make_engine(db_url)
    try:
        upgrade(engine, "0001")
        _insert_raw(engine, 300)
        upgrade(engine, "0002", cfg=rollup_config())
        with engine.connect() as conn:
            before = sorted(tuple(r) for r in conn.execute(
                sa.select(predictions.c.model, predictions.c.request_id, predictions.c.ts, predictions.c.label)))
        upgrade(engine, cfg=rollup_config())
        assert current(engine) == HEAD
        with engine.connect() as conn:
            after = sorted(tuple(r) for r in conn.execute(
                sa.select(predictions.c.model, predictions.c.request_id, predictions.c.ts, predictions.c.label)))
            assert after == before and len(after) == len(before) >= 300
            if engine.dialect.name == "postgresql":
                assert is_partitioned(conn)
                assert len(partitions(conn)) >= 3  # the rows' weeks and the weeks ahead
                assert conn.exec_driver_sql(f"SELECT count(*) FROM {DEFAULT}").scalar_one() == 0
            else:
                assert not is_partitioned(conn)
        assert _diff(engine) == []
    finally:
        engine.dispose()
