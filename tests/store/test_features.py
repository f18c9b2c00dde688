"""Feature references and window samples (modelmon.store.features) on SQLite and PostgreSQL.

Predictions go in through the real write path (`write_batch`); every expected
sample, count and label is computed independently with pandas from the events
the test generated: the `limit` smallest digests among the window's predictions
that carry features.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from modelmon.contract import parse_feedback, parse_prediction
from modelmon.store.engine import make_engine
from modelmon.store.features import (
    FeatureReference,
    delete_reference,
    load_reference,
    sample_keys,
    sample_query,
    sample_window,
    set_reference,
    with_features,
)
from modelmon.store.migrate import upgrade
from modelmon.store.tables import feature_references, predictions
from modelmon.store.writes import write_batch

T0 = 1_790_000_000.0
SPAN = 6 * 3600.0
CATS = ["red", "green", "blue", "teal"]


def _events(n: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Predictions of model "m" (two versions) over SPAN, most with features of mixed
    JSON types; some with none or an empty object; labels for some of them."""
    rng = np.random.default_rng(seed)
    preds, feedback = [], []
    for i in range(n):
        ts = T0 + float(rng.uniform(0, SPAN))
        obj: dict[str, Any] = {
            "request_id": f"q{seed}-{i}", "model": "m", "model_version": ("v1", "v2")[i % 2],
            "timestamp": ts, "prediction": str(rng.integers(0, 3)),
        }
        r = rng.random()
        if r < 0.75:
            feats: dict[str, Any] = {
                "x": float(rng.normal()), "n": int(rng.integers(0, 100)), "c": str(rng.choice(CATS)),
            }
            if rng.random() < 0.1:
                feats["x"] = str(feats["x"])  # a number that arrives as text
            if rng.random() < 0.1:
                feats["x"] = None
            if rng.random() < 0.15:
                del feats["n"]
            if rng.random() < 0.05:
                feats["flag"] = bool(rng.random() < 0.5)
            if rng.random() < 0.02:
                feats[f"rare{i % 3}"] = [1, "a"]
            obj["features"] = feats
        elif r < 0.85:
            obj["features"] = {}  # stored as no features
        preds.append(obj)
        if rng.random() < 0.4:
            feedback.append({"request_id": obj["request_id"], "model": "m",
                             "label": str(rng.integers(0, 3)), "timestamp": ts + 30.0})
    return preds, feedback


def _store(engine: sa.Engine, preds: list[dict[str, Any]], feedback: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        for i in range(0, len(preds), 500):
            write_batch(conn, [(parse_prediction(o), None) for o in preds[i:i + 500]], [], [], now=T0 + SPAN)
        write_batch(conn, [], [(parse_feedback(o), None) for o in feedback], [], now=T0 + SPAN)


def _frame(preds: list[dict[str, Any]], feedback: list[dict[str, Any]]) -> pd.DataFrame:
    """The events as pandas sees them, with their digests and first labels."""
    df = pd.DataFrame({
        "request_id": [o["request_id"] for o in preds],
        "ts": [o["timestamp"] for o in preds],
        "version": [o["model_version"] for o in preds],
        "prediction": [o["prediction"] for o in preds],
        "features": [o.get("features") or None for o in preds],
        "digest": [parse_prediction(o).digest for o in preds],
    })
    fb = pd.DataFrame(feedback).drop_duplicates("request_id")[["request_id", "label"]]
    return df.merge(fb, on="request_id", how="left")


def _expected(
    df: pd.DataFrame, start: float, end: float, limit: int, version: str | None = None
) -> tuple[pd.DataFrame, int, int]:
    """The sample pandas picks: (rows, window rows with features, window rows)."""
    win = df[(df.ts >= start) & (df.ts < end)]
    if version is not None:
        win = win[win.version == version]
    carrying = win[win.features.notna()]
    return carrying.sort_values(["digest", "ts"]).head(limit), len(carrying), len(win)


@pytest.fixture
def engine(db_url: str):
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def stored(engine: sa.Engine) -> pd.DataFrame:
    preds, feedback = _events(1500, seed=1)
    _store(engine, preds, feedback)
    return _frame(preds, feedback)


# -- references ------------------------------------------------------------------------


def _reference(model: str = "m", rows: int = 300, seed: int = 0) -> FeatureReference:
    rng = np.random.default_rng(seed)
    x = [None if rng.random() < 0.1 else float(rng.normal()) for _ in range(rows)]
    return FeatureReference(
        model=model,
        columns={
            "x": x,
            "n": [int(v) for v in rng.integers(-(2**62), 2**62, rows)],
            "big": [2**70 + i for i in range(rows)],  # beyond int64: kept exactly (as JSON)
            "c": [str(rng.choice(CATS)) if rng.random() < 0.9 else None for _ in range(rows)],
            "mixed": [(3.5, "3.5", 7, True, None, [1, "a"], {"k": 1})[i % 7] for i in range(rows)],
            "edge": [(-0.0, math.inf, -math.inf, 1e-310, 5e300)[i % 5] for i in range(rows)],
            "none": [None] * rows,
        },
        predictions=[str(v) for v in rng.integers(0, 3, rows)],
        labels=[None if rng.random() < 0.3 else str(v) for v in rng.integers(0, 3, rows)],
        source="validation.parquet",
        source_rows=rows * 4,
        created_at=1_790_000_123.25,
    )


def _types(ref: FeatureReference) -> dict[str, list[str]]:
    return {k: [type(v).__name__ for v in vs] for k, vs in ref.columns.items()}


def test_a_reference_round_trips_with_its_types(engine: sa.Engine) -> None:
    ref = _reference()
    with engine.begin() as conn:
        set_reference(conn, "m", ref)
    with engine.connect() as conn:
        got = load_reference(conn, "m")
        assert load_reference(conn, "other") is None
    assert got == ref
    assert _types(got) == _types(ref)  # 7 stays int, 3.5 float, "3.5" text, True bool
    assert [math.copysign(1, v) for v in got.columns["edge"][::5]] == [-1.0] * len(got.columns["edge"][::5])
    assert got.rows == 300


def test_setting_again_replaces_and_delete_removes(engine: sa.Engine) -> None:
    first, second = _reference(rows=50, seed=1), _reference(rows=80, seed=2)
    second = replace(second, predictions=None, labels=None)
    with engine.begin() as conn:
        set_reference(conn, "m", first)
        set_reference(conn, "n", replace(first, model="n"))
        set_reference(conn, "m", second)
    with engine.connect() as conn:
        assert load_reference(conn, "m") == second
        assert load_reference(conn, "n").rows == 50
        assert conn.execute(sa.select(sa.func.count()).select_from(feature_references)).scalar_one() == 2
    with engine.begin() as conn:
        assert delete_reference(conn, "m") and not delete_reference(conn, "m")
        assert load_reference(conn, "m") is None


def test_reference_columns_must_agree_and_match_the_model() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        FeatureReference("m", {"a": [1, 2], "b": [1]}, None, None, "f.csv", 2, 0.0)
    with pytest.raises(ValueError, match="different lengths"):
        FeatureReference("m", {"a": [1, 2]}, ["x"], None, "f.csv", 2, 0.0)
    with pytest.raises(ValueError, match="cannot be stored"):
        set_reference(None, "n", _reference("m"))  # type: ignore[arg-type]


# -- window samples --------------------------------------------------------------------


def _columns_of(rows: pd.DataFrame) -> dict[str, list[Any]]:
    names = sorted({k for f in rows.features for k in f})
    return {k: [f.get(k) for f in rows.features] for k in names}


def _labels(rows: pd.DataFrame) -> list[str | None]:
    return [None if isinstance(v, float) and math.isnan(v) else v for v in rows.label]


@pytest.mark.parametrize("limit", [1, 250, 5000])
def test_the_sample_is_the_smallest_digests_with_their_counts_and_labels(
    engine: sa.Engine, stored: pd.DataFrame, limit: int
) -> None:
    start, end = T0 + 3600.0, T0 + 4 * 3600.0
    rows, carrying, total = _expected(stored, start, end, limit)
    with engine.connect() as conn:
        s = sample_window(conn, "m", start, end, limit)
    assert s.request_ids == list(rows.request_id)
    assert s.rows == min(limit, carrying) and carrying > 250
    assert (s.with_features, s.total) == (carrying, total)
    assert s.predictions == list(rows.prediction)
    assert s.labels == _labels(rows)
    assert s.columns == _columns_of(rows)
    assert s.columns_left_out == 0
    # values keep their JSON types: text that looks like a number stays text
    kinds = {type(v) for v in s.columns["x"]}
    assert kinds <= {float, str, type(None)}
    if limit > 100:  # the data holds both cases
        assert kinds == {float, str, type(None)}
        assert any(s.labels) and None in s.labels


def test_the_version_filter(engine: sa.Engine, stored: pd.DataFrame) -> None:
    start, end = T0, T0 + SPAN
    for version in ("v1", "v2"):
        rows, carrying, total = _expected(stored, start, end, 200, version)
        with engine.connect() as conn:
            s = sample_window(conn, "m", start, end, 200, version)
        assert s.request_ids == list(rows.request_id)
        assert (s.with_features, s.total) == (carrying, total)
    with engine.connect() as conn:
        none = sample_window(conn, "m", start, end, 200, "v9")
        other = sample_window(conn, "other", start, end, 200)
    assert (none.rows, none.with_features, none.total, none.columns) == (0, 0, 0, {})
    assert (other.rows, other.total) == (0, 0)


def test_the_sample_does_not_depend_on_insert_order(tmp_path, stored: pd.DataFrame, engine: sa.Engine) -> None:
    preds, feedback = _events(1500, seed=1)
    order = np.random.default_rng(5).permutation(len(preds))
    shuffled = make_engine(f"sqlite:///{tmp_path}/shuffled.db")
    try:
        upgrade(shuffled)
        _store(shuffled, [preds[i] for i in order], feedback[::-1])
        start, end = T0 + 600.0, T0 + SPAN - 600.0
        with engine.connect() as a, shuffled.connect() as b:
            first = sample_window(a, "m", start, end, 300)
            again = sample_window(a, "m", start, end, 300)
            other = sample_window(b, "m", start, end, 300)
        assert first == again == other
    finally:
        shuffled.dispose()


def test_max_columns_keeps_the_most_frequent_names(engine: sa.Engine, stored: pd.DataFrame) -> None:
    rows, _, _ = _expected(stored, T0, T0 + SPAN, 2000)
    counts = pd.Series([k for f in rows.features for k in f]).value_counts()
    ranked = sorted(counts.index, key=lambda k: (-counts[k], k))
    with engine.connect() as conn:
        s = sample_window(conn, "m", T0, T0 + SPAN, 2000, max_columns=3)
    assert sorted(s.columns) == sorted(ranked[:3])
    assert s.columns_left_out == len(ranked) - 3 > 0
    full = _columns_of(rows)
    assert all(s.columns[k] == full[k] for k in s.columns)


def test_limit_zero_still_counts(engine: sa.Engine, stored: pd.DataFrame) -> None:
    _, carrying, total = _expected(stored, T0, T0 + SPAN, 0)
    with engine.connect() as conn:
        s = sample_window(conn, "m", T0, T0 + SPAN, 0)
    assert (s.rows, s.with_features, s.total) == (0, carrying, total)
    with pytest.raises(ValueError, match="limit"):
        sample_window(None, "m", T0, T0 + SPAN, -1)  # type: ignore[arg-type]


# -- the index ---------------------------------------------------------------------------


def _plan(conn: sa.Connection, stmt: sa.Select) -> str:
    sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
    return "\n".join(r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))


def test_sqlite_reads_the_sample_and_its_count_through_the_partial_index(tmp_path) -> None:
    """The keys come from the partial index by (model, ts range), top-N by digest; each
    sampled row is then found through it by (model, ts, digest), its label through the
    feedback key. (SQLite before 3.42 still visits each row to re-check the index's
    predicate, so the scan is not reported as COVERING there.)"""
    engine = make_engine(f"sqlite:///{tmp_path}/plan.db")
    try:
        upgrade(engine)
        preds, feedback = _events(600, seed=3)
        _store(engine, preds, feedback)
        p = predictions
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            sample = _plan(conn, sample_query("m", T0, T0 + SPAN, 100))
            versioned = _plan(conn, sample_query("m", T0, T0 + SPAN, 100, "v1"))
            count = _plan(conn, sa.select(sa.func.count()).select_from(p).where(
                p.c.model == "m", p.c.ts >= T0, p.c.ts < T0 + SPAN, with_features()))
        scan = r"USING (COVERING )?INDEX ix_predictions_with_features \(model=\? AND ts>\? AND ts<\?\)"
        for plan in (sample, versioned):
            assert re.search(scan, plan), plan
            assert "INDEX ix_predictions_with_features (model=? AND ts=? AND digest=?)" in plan, plan
            assert re.search(r"SEARCH feedback USING INDEX \S+ \(model=\? AND request_id=\?\)", plan), plan
        assert re.search(scan, count), count
    finally:
        engine.dispose()


@pytest.mark.integration
def test_postgres_partitions_old_and_new_have_the_partial_index(pg_url: str) -> None:
    from modelmon.store.partitions import DEFAULT, create_partition, partitions

    engine = make_engine(pg_url)
    try:
        upgrade(engine)
        preds, feedback = _events(400, seed=4)  # T0 is outside the partitions made: DEFAULT
        _store(engine, preds, feedback)
        week = 7 * 86400.0
        start = math.floor(T0 / week) * week
        with engine.begin() as conn:
            create_partition(conn, start, start + week)  # takes DEFAULT's rows of that week
        with engine.connect() as conn:
            names = [name for name, _, _ in partitions(conn)] + [DEFAULT]
            defs = dict(conn.exec_driver_sql(
                "SELECT tablename, indexdef FROM pg_indexes WHERE indexdef LIKE '%%features IS NOT NULL%%'"
            ).all())
            moved = conn.exec_driver_sql(
                f'SELECT count(*) FROM "{names[0]}" WHERE features IS NOT NULL').scalar_one()
            rows, carrying, total = _expected(_frame(preds, feedback), T0, T0 + SPAN, 100)
            s = sample_window(conn, "m", T0, T0 + SPAN, 100)
        with engine.begin() as conn:  # rolled back: the partial index alone, what can it do?
            conn.exec_driver_sql("DROP INDEX ix_predictions_model_ts")
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a tiny table: else the cheapest
            conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
            keys = sample_keys("m", T0, T0 + SPAN, 100)
            plan = "\n".join(r[0] for r in conn.execute(sa.text("EXPLAIN " + str(
                keys.compile(conn, compile_kwargs={"literal_binds": True})))))
            conn.rollback()
        # it serves the window's keys, its predicate proven: no check of features on the rows
        used = re.search(r"Index (Only )?Scan using (\S+) on " + names[0], plan)
        assert used and "digest" in used.group(2) and "features" not in plan, plan
        assert set(names) <= set(defs), (names, defs)
        assert all("(model, ts, digest, model_version)" in defs[n] for n in names)
        assert moved == carrying > 0
        assert s.request_ids == list(rows.request_id) and (s.with_features, s.total) == (carrying, total)
    finally:
        engine.dispose()
