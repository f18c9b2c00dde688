"""The scheduler: every family per model, results and run bookkeeping written,
a raising family isolated, and one job per interval across processes on PostgreSQL."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import sqlalchemy as sa
from synth_events import NOW, events, migrated_engine, store

from modelmon.config import Config
from modelmon.monitors import latency, shift
from modelmon.monitors.base import MetricRow, Window, WindowedRow
from modelmon.monitors.results import latest_results, runs
from modelmon.monitors.scheduler import MonitorScheduler, lock_key
from modelmon.store.tables import monitor_results

CFG = Config.model_validate({"models": {"m": {"windows": ["1h"], "min_samples": 20}}})


@pytest.fixture
def engine(db_url):
    engine = migrated_engine(db_url)
    rng = np.random.default_rng(1)
    store(engine, events(rng, 300, ["a", "b"], start=NOW - 3600, end=NOW, label_share=0.5))
    store(engine, events(rng, 50, ["x"], start=NOW - 3600, end=NOW, model="found", prefix="f"))
    yield engine
    engine.dispose()


def test_run_once_writes_every_family_and_latest_results(engine):
    sched = MonitorScheduler(CFG, engine)
    assert not sched.first_pass_done
    with engine.connect() as conn:
        assert sched.models(conn) == ["found", "m"]
    out = sched.run_once(NOW - 60)
    out2 = sched.run_once(NOW)
    assert sched.first_pass_done
    families = sched.available_families()
    assert {"shift", "latency"} <= set(families)
    for model in ("m", "found"):
        for fam in families:
            assert out[f"{fam}:{model}"] == "ok" and out2[f"{fam}:{model}"] == "ok"
    with engine.connect() as conn:
        latest = latest_results(conn, "m")
        total = conn.execute(sa.select(sa.func.count()).select_from(monitor_results)).scalar()
        everything = latest_results(conn)
        bookkeeping = {r["job"]: r for r in runs(conn)}
    assert {r["computed_at"] for r in latest} == {NOW}
    assert {"shift", "latency"} <= {r["monitor"] for r in latest} <= set(families)
    assert {r["model"] for r in everything} == {"m", "found"}
    assert total == 2 * len(everything)  # history is kept
    psi = [r for r in latest if r["metric"] == "class_shift_psi" and r["labels"]["baseline"] == "rolling"]
    assert psi and psi[0]["window"] == "1h" and psi[0]["window_end"] == NOW
    for fam in families:
        run = bookkeeping[f"{fam}:m"]
        assert run["last_success"] == NOW and run["last_error"] is None and run["last_duration_seconds"] >= 0


def test_discovery_can_be_turned_off(engine):
    cfg = Config.model_validate({"models": {"m": {}}, "monitors": {"discover_models": False}})
    with engine.connect() as conn:
        assert MonitorScheduler(cfg, engine).models(conn) == ["m"]


def test_a_raising_family_is_recorded_and_the_others_go_on(engine, monkeypatch, caplog):
    def broken(conn, model, now):
        raise RuntimeError("boom")

    monkeypatch.setattr(shift, "collect", broken)
    sched = MonitorScheduler(CFG, engine)
    out = sched.run_once(NOW)
    assert out["shift:m"].startswith("error: RuntimeError: boom")
    assert out["latency:m"] == "ok"
    assert "shift:m" in caplog.text
    with engine.connect() as conn:
        run = {r["job"]: r for r in runs(conn)}["shift:m"]
        assert run["last_success"] is None and "boom" in run["last_error"]
        assert not [r for r in latest_results(conn, "m") if r["monitor"] == "shift"]
    monkeypatch.undo()
    assert sched.run_once(NOW + 60)["shift:m"] == "ok"
    with engine.connect() as conn:
        run = {r["job"]: r for r in runs(conn)}["shift:m"]
    assert run["last_success"] == NOW + 60 and run["last_error"] is None


def test_a_partial_write_is_rolled_back(engine, monkeypatch):
    """A family that fails half-way leaves no rows: collect and write share a transaction."""
    w = Window("1h", NOW - 3600, NOW)

    def bad_rows(conn, model, now):
        return [WindowedRow(w, MetricRow("ok_metric", 1.0, 1)), WindowedRow(w, MetricRow("x" * 500, 1.0, 1))]

    monkeypatch.setattr(latency, "collect", bad_rows)
    sched = MonitorScheduler(CFG, engine)
    status = sched.run_job("latency", "m", NOW)
    with engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(monitor_results)
                         .where(monitor_results.c.metric == "ok_metric")).scalar()
    if engine.dialect.name == "postgresql":  # SQLite does not enforce VARCHAR lengths
        assert status.startswith("error") and n == 0


def test_start_runs_the_first_pass_and_stop(engine):
    cfg = Config.model_validate({"models": {"m": {"windows": ["1h"], "interval": "1s"}}})
    sched = MonitorScheduler(cfg, engine)
    sched.start()
    try:
        deadline = time.monotonic() + 30
        while not sched.first_pass_done and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sched.first_pass_done
    finally:
        sched.stop()
    with engine.connect() as conn:
        jobs = {r["job"] for r in runs(conn) if r["last_success"] is not None}
    assert {"shift:m", "latency:m", "shift:found"} <= jobs


@pytest.mark.integration
def test_two_schedulers_on_one_postgres_run_each_job_once(pg_url, monkeypatch):
    engine = migrated_engine(pg_url)
    rng = np.random.default_rng(3)
    store(engine, events(rng, 100, ["a", "b"], start=NOW - 3600, end=NOW))
    calls = []
    real = latency.collect
    gate = threading.Barrier(2, timeout=10)

    def slow(conn, model, now):
        calls.append(threading.get_ident())
        time.sleep(0.5)  # hold the lock while the other scheduler tries
        return real(conn, model, now)

    monkeypatch.setattr(latency, "collect", slow)
    a, b = MonitorScheduler(CFG, engine), MonitorScheduler(CFG, migrated_engine(pg_url))
    outcomes: list[str] = []

    def run(s):
        gate.wait()
        outcomes.append(s.run_job("latency", "m", NOW, force=False))

    threads = [threading.Thread(target=run, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "skipped"]
    assert len(calls) == 1
    # A later scheduled tick within half an interval is skipped by either process...
    assert b.run_job("latency", "m", NOW + 10, force=False) == "skipped"
    # ...and an explicit run (run_once, the demo) still runs.
    assert b.run_job("latency", "m", NOW + 10) == "ok"
    # A lock held elsewhere makes the job skip quietly.
    with engine.begin() as conn:
        assert conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(lock_key("latency:m")))).scalar()
        assert a.run_job("latency", "m", NOW + 120) == "skipped"
    assert a.run_job("latency", "m", NOW + 120) == "ok"


def test_one_tick_shares_its_scans_and_matches_unshared(engine):
    """The families of one (model, tick) share scans; the numbers do not change."""
    cfg = Config.model_validate({"models": {"m": {"windows": ["5m", "1h"], "min_samples": 20, "min_labels": 20,
                                                  "positive_class": "a", "slices": ["region", "device"]}}})
    sched = MonitorScheduler(cfg, engine)
    families = sched.available_families()
    selects: list[str] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        if "FROM predictions" in statement:
            selects.append(statement)

    sa.event.listen(engine, "before_cursor_execute", grab)
    try:
        assert all(sched.run_job(f, "m", NOW) == "ok" for f in families)
    finally:
        sa.event.remove(engine, "before_cursor_execute", grab)
    # shared groups + delays + fairness + SLO buckets + last ts (+ latency quantiles on PostgreSQL)
    assert len(selects) <= 6, selects
    with engine.connect() as conn:
        shared_rows = latest_results(conn, "m")
        resolved = cfg.model("m")
        unshared = {f: sched._module(f).collect(conn, resolved, NOW) for f in families}  # no cache installed
    by_key = {(r["monitor"], r["metric"], r["window"], r["slice"]): r["value"] for r in shared_rows}
    for fam, rows in unshared.items():
        for wr in rows:
            assert by_key[(fam, wr.row.metric, wr.window.name, wr.row.slice_key)] == wr.row.value


def test_aggregate_cache_computes_each_key_once():
    from modelmon.monitors.aggregates import AggregateCache

    cache, calls = AggregateCache(size=2), []

    def compute():
        calls.append(1)
        time.sleep(0.05)
        return len(calls)

    threads = [threading.Thread(target=cache.get, args=("k", compute)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get("k", compute) == 1 and len(calls) == 1
    cache.get("a", compute)
    cache.get("b", compute)  # evicts "k", the oldest
    assert cache.get("k", compute) == 4
    cache = AggregateCache()
    cache.get(("groups", "m", 1.0), compute)
    cache.get(("stream", "m", 1.0), compute)
    cache.get(("groups", "other", 1.0), compute)
    cache.get(("groups", "m", 2.0), compute)  # a new tick of m drops m's older tick
    assert set(cache._values) == {("groups", "other", 1.0), ("groups", "m", 2.0)}


def test_window_scans_run_with_bounded_planner_settings_on_postgres(engine):
    """PostgreSQL: the window scans run with WINDOW_SCAN_SETTINGS (SET LOCAL), the
    other statements of the same transaction with the previous values; SQLite: untouched."""
    from modelmon.monitors.queries import WINDOW_SCAN_SETTINGS

    cfg = Config.model_validate({"models": {"m": {"windows": ["5m", "1h"], "min_samples": 20, "min_labels": 20,
                                                  "positive_class": "a", "slices": ["region", "device"]}}})
    sched = MonitorScheduler(cfg, engine)
    names = list(WINDOW_SCAN_SETTINGS)
    seen: list[tuple[str, dict[str, str] | None]] = []
    postgres = engine.dialect.name == "postgresql"

    def grab(conn, cursor, statement, parameters, context, executemany):
        if "set_config" in statement:
            seen.append(("set_config", None))
        elif "FROM predictions" in statement:
            now = None
            if postgres:
                cur = cursor.connection.cursor()
                now = {n: cur.execute(f"SELECT current_setting('{n}')").fetchone()[0] for n in names}
            seen.append((statement, now))

    sa.event.listen(engine, "before_cursor_execute", grab)
    try:
        assert all(sched.run_job(f, "m", NOW) == "ok" for f in sched.available_families())
    finally:
        sa.event.remove(engine, "before_cursor_execute", grab)
    if not postgres:
        assert all(st != "set_config" for st, _ in seen)
        return
    window_scans = [s for st, s in seen if "percentile_cont" in st or " AS k" in st]
    others = [s for st, s in seen if st != "set_config" and ("AS bucket" in st or "max(predictions.ts)" in st)]
    assert len(window_scans) >= 3 and len(others) >= 2
    assert all(s == WINDOW_SCAN_SETTINGS for s in window_scans), window_scans
    assert all(s is not None and s["work_mem"] != WINDOW_SCAN_SETTINGS["work_mem"] for s in others), others
