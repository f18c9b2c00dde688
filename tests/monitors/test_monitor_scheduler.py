"""The scheduler: every family per model, latest results replaced and history
thinned to `monitors.history_interval`, run bookkeeping written, a raising
family isolated, the retention job, and one job per interval across processes
on PostgreSQL."""

from __future__ import annotations

import sys
import threading
import time
import types

import numpy as np
import pytest
import sqlalchemy as sa
from synth_events import NOW, events, migrated_engine, store

from modelmon.config import Config
from modelmon.monitors import latency, shift
from modelmon.monitors.base import MetricRow, Window, WindowedRow
from modelmon.monitors.registry import FEATURE_FAMILIES
from modelmon.monitors.results import latest_results, runs
from modelmon.monitors.scheduler import RECONCILE_JOB, RETENTION_JOB, MonitorScheduler, lock_key
from modelmon.store.tables import monitor_latest, monitor_results, monitor_runs, predictions

STUB = "modelmon_test_stub_family"  # the `stub` fixture's family module
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
        history = conn.execute(sa.select(monitor_results.c.computed_at)).scalars().all()
        everything = latest_results(conn)
        bookkeeping = {r["job"]: r for r in runs(conn)}
    assert {r["computed_at"] for r in latest} == {NOW}
    assert {"shift", "latency"} <= {r["monitor"] for r in latest} <= set(families)
    assert {r["model"] for r in everything} == {"m", "found"}
    # The second pass came within monitors.history_interval: history holds the first only
    # (its row count may differ from the second's: a version without traffic in a
    # window has no rows of its own there).
    assert set(history) == {NOW - 60} and history
    psi = [r for r in latest if r["metric"] == "class_shift_psi" and r["labels"]["baseline"] == "rolling"]
    assert psi and psi[0]["window"] == "1h" and psi[0]["window_end"] == NOW
    for fam in families:
        run = bookkeeping[f"{fam}:m"]
        assert run["last_success"] == NOW and run["last_error"] is None and run["last_duration_seconds"] >= 0
        assert run["last_history"] == NOW - 60


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
        n_latest = conn.execute(sa.select(sa.func.count()).select_from(monitor_latest)
                                .where(monitor_latest.c.metric == "ok_metric")).scalar()
    if engine.dialect.name == "postgresql":  # SQLite does not enforce VARCHAR lengths
        assert status.startswith("error") and n == 0 and n_latest == 0


def test_start_runs_the_first_pass_and_stop(engine, stub):
    """Stub families: the real ones' scans are covered above, this is about the schedule."""
    cfg = Config.model_validate({"models": {"m": {"windows": ["1h"], "interval": "1s"}}})
    sched = MonitorScheduler(cfg, engine, families={"a": STUB, "b": STUB})
    sched.start()
    try:
        deadline = time.monotonic() + 30
        while not sched.first_pass_done and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sched.first_pass_done
        jobs = {j.name: j for j in sched.jobs()}
        # Ready only once every job was attempted (not when the first thread finished one).
        assert all(jobs[f"{f}:{m}"].runs >= 1 for f in ("a", "b") for m in ("m", "found"))
        assert RETENTION_JOB in jobs
    finally:
        sched.stop()
    with engine.connect() as conn:
        jobs = {r["job"] for r in runs(conn) if r["last_success"] is not None}
    assert {"a:m", "b:m", "a:found", "b:found"} <= jobs
    off = Config.model_validate({"models": {"m": {"windows": ["1h"]}}, "retention": {"enabled": False}})
    sched = MonitorScheduler(off, engine, families={"a": STUB})
    sched.start()
    try:
        assert RETENTION_JOB not in {j.name for j in sched.jobs()}
    finally:
        sched.stop(wait=False)


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
    # The feature families read their own sample of raw rows (monitors/features.py), not rollups.
    families = [f for f in sched.available_families() if f not in FEATURE_FAMILIES]
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

# -- latest results and history cadence (a stub family: independent of the real ones) ----


@pytest.fixture
def stub(monkeypatch):
    """A family module "stub" whose rows say which tick made them; `fail` makes it raise."""
    module = types.ModuleType(STUB)
    state = {"fail": False}

    def collect(conn, model, now):
        if state["fail"]:
            raise RuntimeError("stub down")
        w = Window("1h", now - 3600, now)
        return [WindowedRow(w, MetricRow("stub_tick", now, 10)),
                WindowedRow(w, MetricRow("stub_sliced", 1.0, 5, labels={"slice": "a=1"}))]

    module.collect = collect
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return state


def _history(conn) -> list[float]:
    return sorted(conn.execute(sa.select(monitor_results.c.computed_at)).scalars())


def test_latest_is_replaced_every_tick_and_history_follows_its_interval(engine, stub):
    cfg = Config.model_validate({"models": {"m": {"windows": ["1h"]}}, "monitors": {"history_interval": "10m"}})
    sched = MonitorScheduler(cfg, engine, families={"stub": STUB})
    t0 = NOW - 1200
    for i in range(3):  # three ticks within the history interval
        assert sched.run_job("stub", "m", t0 + 60 * i) == "ok"
    with engine.connect() as conn:
        assert _history(conn) == [t0, t0]  # one pass (two rows) in the history
        latest = latest_results(conn, "m")
        (run,) = [r for r in runs(conn) if r["job"] == "stub:m"]
        assert conn.execute(sa.select(sa.func.count()).select_from(monitor_latest)).scalar() == 2
    assert [(r["metric"], r["computed_at"], r["value"]) for r in latest] == [
        ("stub_sliced", t0 + 120, 1.0), ("stub_tick", t0 + 120, t0 + 120)]
    assert latest[0]["labels"] == {"slice": "a=1"} and latest[0]["slice"] == "slice=a=1"
    assert (run["last_success"], run["last_history"]) == (t0 + 120, t0)
    # A tick a whole interval after the last append goes to the history again.
    assert sched.run_job("stub", "m", t0 + 600) == "ok"
    assert sched.run_job("stub", "m", t0 + 660) == "ok"
    with engine.connect() as conn:
        assert _history(conn) == [t0, t0, t0 + 600, t0 + 600]
        assert {r["computed_at"] for r in latest_results(conn)} == {t0 + 660}
    # A failing job keeps its last good values (and its history mark).
    stub["fail"] = True
    assert sched.run_job("stub", "m", t0 + 1200).startswith("error: RuntimeError: stub down")
    with engine.connect() as conn:
        assert {r["computed_at"] for r in latest_results(conn, "m")} == {t0 + 660}
        assert _history(conn) == [t0, t0, t0 + 600, t0 + 600]
        (run,) = [r for r in runs(conn) if r["job"] == "stub:m"]
    assert (run["last_success"], run["last_history"], run["last_attempt"]) == (t0 + 660, t0 + 600, t0 + 1200)


def test_exporter_and_api_see_the_latest_tick(engine, stub):
    from prometheus_client import CollectorRegistry, generate_latest

    from modelmon.alerts.exporter import MonitorResultsCollector

    cfg = Config.model_validate({"models": {"m": {"windows": ["1h"]}}, "monitors": {"history_interval": "1h"}})
    sched = MonitorScheduler(cfg, engine, families={"stub": STUB})
    for i in range(3):
        sched.run_job("stub", "m", NOW + 60 * i)
    registry = CollectorRegistry()
    registry.register(MonitorResultsCollector(engine, cfg, cache_seconds=0, clock=lambda: NOW + 120))
    text = generate_latest(registry).decode()
    line = [x for x in text.splitlines() if x.startswith("modelmon_stub_tick{")]
    assert len(line) == 1 and float(line[0].split()[-1]) == NOW + 120, text


def test_run_once_leaves_retention_out_and_retention_runs_on_demand(engine, stub):
    cfg = Config.model_validate({"models": {"m": {"windows": ["1h"]}}, "retention": {"predictions": "1h"}})
    sched = MonitorScheduler(cfg, engine, families={"stub": STUB})
    count = sa.select(sa.func.count()).select_from(predictions)
    with engine.connect() as conn:
        before = conn.execute(count).scalar()
    out = sched.run_once(NOW + 7200)
    assert RETENTION_JOB not in out
    with engine.connect() as conn:
        assert conn.execute(count).scalar() == before
    assert sched.retention(NOW + 7200) == "ok"
    with engine.connect() as conn:
        assert conn.execute(count).scalar() == 0  # every synthetic event is older than NOW
        (run,) = conn.execute(sa.select(monitor_runs).where(monitor_runs.c.job == RETENTION_JOB)).mappings()
    assert run["last_success"] == NOW + 7200 and run["last_error"] is None
    # A scheduled tick within half an interval of the last run is skipped; an explicit run is not.
    assert sched.retention(NOW + 7260, force=False) == "skipped"
    assert sched.retention(NOW + 7260) == "ok"


def test_a_scheduled_retention_run_that_deletes_records_its_success(engine):
    """A scheduled tick (force=False) reads `monitor_runs`, deletes through other
    connections, then records its run on the lock connection: that succeeds."""
    cfg = Config.model_validate({"models": {"m": {"windows": ["1h"]}}, "retention": {"predictions": "1h"}})
    sched = MonitorScheduler(cfg, engine)
    assert sched.retention(NOW + 7200, force=False) == "ok"
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar() == 0
        (run,) = conn.execute(sa.select(monitor_runs).where(monitor_runs.c.job == RETENTION_JOB)).mappings()
    assert run["last_success"] == NOW + 7200 and run["last_error"] is None


# -- the fair queue (a fake clock: the order and the arithmetic, no sleeping) ---------


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _take_all(queue) -> list[str]:
    out = []
    while (got := queue.take(timeout=0)) is not None:
        out.append(got[0].name)
    return out


def test_phases_spread_the_models_and_a_models_families_share_theirs():
    from modelmon.monitors.schedule import FairQueue, phase_of

    clock = Clock(NOW)
    queue = FairQueue(clock)
    models = [f"model-{i}" for i in range(200)]
    for m in models:
        for order, fam in enumerate(("a", "b")):
            queue.add(f"{fam}:{m}", fam, m, 60.0, NOW, order=order)
    for name in _take_all(queue):  # the first pass: everything is due at once
        queue.done(name)
    due = {j.name: j.due for j in queue.jobs()}
    for m in models:
        assert due[f"a:{m}"] == due[f"b:{m}"]  # one slot per model: its families share scans
        assert NOW + 30 < due[f"a:{m}"] <= NOW + 90  # not repeated right after the first run
        assert (due[f"a:{m}"] - phase_of(m, 60.0)) % 60.0 == pytest.approx(0.0, abs=1e-6)
    # Spread over the interval, not all at one instant: every tenth of it holds some.
    assert len({int((d - NOW - 30) // 6) for d in due.values()}) == 10
    # Stable: another process (or a restart) computes the same slots.
    again = FairQueue(Clock(NOW + 1234))
    again.add("a:model-7", "a", "model-7", 60.0)
    assert again.jobs()[0].phase == phase_of("model-7", 60.0) == queue_phase(queue, "a:model-7")


def queue_phase(queue, name: str) -> float:
    return next(j.phase for j in queue.jobs() if j.name == name)


def test_the_job_due_longest_runs_first_across_families_and_models():
    from modelmon.monitors.schedule import FairQueue

    clock = Clock(NOW)
    queue = FairQueue(clock)
    queue.add("a:m1", "a", "m1", 60.0, NOW - 10, order=0)
    queue.add("b:m2", "b", "m2", 60.0, NOW - 50, order=1)
    queue.add("a:m3", "a", "m3", 60.0, NOW - 30, order=0)
    queue.add("b:m3", "b", "m3", 60.0, NOW - 30, order=1)
    queue.add("c:m0", "c", "m0", 60.0, NOW + 5, order=2)  # not due yet
    assert _take_all(queue) == ["b:m2", "a:m3", "b:m3", "a:m1"]
    clock.t += 5
    assert _take_all(queue) == ["c:m0"]


def test_a_job_that_falls_behind_is_coalesced_into_one_run_not_dropped():
    from modelmon.monitors.schedule import FairQueue

    clock = Clock(NOW)
    queue = FairQueue(clock)
    queue.add("a:m", "a", "m", 10.0, NOW)
    job, tick = queue.take(timeout=0)
    assert tick == NOW
    queue.done("a:m")
    (state,) = queue.jobs()
    first_slot = state.due
    clock.t = first_slot + 35  # three more slots pass while the workers are busy elsewhere
    job, tick = queue.take(timeout=0)
    assert tick == first_slot + 30  # the latest slot: fresh numbers, once
    assert queue.take(timeout=0) is None  # one run for the backlog, none queued behind it
    queue.done("a:m")
    (state,) = queue.jobs()
    assert (state.runs, state.late, state.missed) == (2, 1, 3)
    assert state.due == first_slot + 40  # its next slot after now
    assert [r.tick for r in state.recent] == [NOW, first_slot + 30]


def test_one_family_cannot_hold_every_worker():
    from modelmon.monitors.schedule import FairQueue

    clock = Clock(NOW)
    queue = FairQueue(clock, family_cap=1)
    queue.add("hang:m1", "hang", "m1", 60.0, NOW - 20)
    queue.add("hang:m2", "hang", "m2", 60.0, NOW - 20)
    queue.add("ok:m1", "ok", "m1", 60.0, NOW)
    assert queue.take(timeout=0)[0].name == "hang:m1"  # never finishes
    assert _take_all(queue) == ["ok:m1"]  # hang:m2 is older but waits for its family


def test_grouped_families_share_one_cap():
    """The two feature families wait on one worker process: one pool thread between them."""
    from modelmon.monitors.schedule import FairQueue

    clock = Clock(NOW)
    queue = FairQueue(clock, family_cap=3, groups={"fd": "features", "dq": "features"},
                      group_caps={"features": 1})
    queue.add("fd:m1", "fd", "m1", 60.0, NOW - 30)
    queue.add("dq:m1", "dq", "m1", 60.0, NOW - 30)
    queue.add("fd:m2", "fd", "m2", 60.0, NOW - 20)
    queue.add("ok:m1", "ok", "m1", 60.0, NOW)
    first = queue.take(timeout=0)[0].name  # still running
    assert first in ("fd:m1", "dq:m1")
    # The other m1 job and fd:m2 are older, but the group is at its cap; the others go on.
    assert _take_all(queue) == ["ok:m1"]
    queue.done(first)
    assert queue.take(timeout=0)[0].name == ({"fd:m1", "dq:m1"} - {first}).pop()


def test_the_delay_metric_reflects_a_backlog_and_late_runs():
    from prometheus_client import CollectorRegistry, generate_latest

    from modelmon.monitors.schedule import FairQueue, ScheduleCollector

    clock = Clock(NOW)
    queue = FairQueue(clock)
    for m in ("m1", "m2"):
        queue.add(f"a:{m}", "a", m, 10.0, NOW)
        queue.add(f"b:{m}", "b", m, 10.0, NOW)
    registry = CollectorRegistry()
    registry.register(ScheduleCollector(lambda: queue))

    def sample(name: str, family: str) -> float:
        return registry.get_sample_value(name, {"monitor": family})

    clock.t = NOW + 25  # nothing started yet
    assert sample("modelmon_monitor_schedule_delay_seconds", "a") == 25
    queue.take(timeout=0)  # a:m1 starts...
    assert sample("modelmon_monitor_schedule_delay_seconds", "a") == 25  # ...a:m2 still waits
    assert _take_all(queue) == ["b:m1", "a:m2", "b:m2"]  # a model's families side by side
    assert sample("modelmon_monitor_runs_late_total", "a") == 2
    # Running, not yet past its next slot: not behind.
    assert sample("modelmon_monitor_schedule_delay_seconds", "b") == 0
    for name in ("a:m1", "a:m2", "b:m1"):
        queue.done(name)
    # b:m2 still runs 40 s past its next slot: its family is that far behind.
    b = next(j for j in queue.jobs() if j.name == "b:m2")
    clock.t = b.next_due(b.running_since) + 40
    assert sample("modelmon_monitor_schedule_delay_seconds", "b") == 40
    text = generate_latest(registry).decode()
    assert "# TYPE modelmon_monitor_runs_late_total counter" in text
    assert 'modelmon_monitor_schedule_delay_seconds{monitor="b"} 40.0' in text


# -- the scheduler's threads ------------------------------------------------------------


@pytest.fixture
def slow_stub(monkeypatch):
    """Family module "slow": sleeps `seconds` per job; blocks while `gate` is clear."""
    module = types.ModuleType("modelmon_test_slow_family")
    state = {"seconds": 0.0, "gate": threading.Event(), "calls": []}
    state["gate"].set()

    def collect(conn, model, now):
        state["calls"].append((model.name, now))
        state["gate"].wait(30)
        time.sleep(state["seconds"])
        return []

    module.collect = collect
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return state


def _fleet_cfg(n: int, interval: str, workers: int = 1) -> Config:
    return Config.model_validate({
        "models": {f"x{i}": {"windows": ["1h"], "interval": interval} for i in range(n)},
        "monitors": {"discover_models": False, "max_workers": workers},
        "retention": {"enabled": False},
    })


def test_reconcile_runs_every_tick_while_model_jobs_are_overdue(engine, slow_stub):
    """24 jobs of 1.5 s per 1 s tick: the model jobs fall far behind, the reconciliation
    does not (it used to queue behind them and be dropped past its 1 s grace)."""
    slow_stub["seconds"] = 1.5
    sched = MonitorScheduler(_fleet_cfg(24, "1s"), engine, families={"slow": "modelmon_test_slow_family"})
    reconciled: list[float] = []
    real = sched.reconcile

    def reconcile(now=None):
        reconciled.append(time.monotonic())
        return real(now)

    sched.reconcile = reconcile
    sched.start()
    try:
        time.sleep(6)
        behind = {s.labels["monitor"]: s.value for m in sched.collector().collect() for s in m.samples
                  if s.name == "modelmon_monitor_schedule_delay_seconds"}
    finally:
        sched.stop()
    assert behind["slow"] > 2 and behind["reconcile_labels"] < 1
    assert len(reconciled) >= 5, reconciled
    assert max(b - a for a, b in zip(reconciled, reconciled[1:], strict=False)) < 2.0


def test_jobs_that_never_ran_have_a_runs_row(engine, slow_stub, stub):
    """Queued jobs get their `monitor_runs` row at once: staleness covers jobs that never run."""
    slow_stub["gate"].clear()  # the first job blocks: nothing else gets to run
    cfg = _fleet_cfg(3, "1m")
    sched = MonitorScheduler(cfg, engine, families={"slow": "modelmon_test_slow_family", "b": STUB})
    sched.start()
    try:
        deadline = time.monotonic() + 10
        while not slow_stub["calls"] and time.monotonic() < deadline:
            time.sleep(0.02)
        with engine.connect() as conn:
            rows = {r["job"]: r for r in runs(conn)}
    finally:
        slow_stub["gate"].set()
        sched.stop()
    expected = {f"{f}:x{i}" for f in ("slow", "b") for i in range(3)}
    assert expected <= set(rows)
    never = [j for j in expected if rows[j]["last_attempt"] is None]
    assert len(never) >= 4  # one worker, blocked in the first job
    for j in never:
        assert rows[j]["last_success"] is None and rows[j]["monitor"] == j.split(":")[0]
    assert rows[RECONCILE_JOB]["model"] == "*"
