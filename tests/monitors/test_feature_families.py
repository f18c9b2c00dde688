"""The feature families end to end on SQLite: predictions with features and a reference in the
store, the scheduler's jobs, the rows they write, and the worker process they run in."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from scipy.stats import norm
from synth_events import NOW, events, migrated_engine, store

from modelmon.config import Config
from modelmon.monitors.results import latest_results, runs
from modelmon.monitors.scheduler import MonitorScheduler
from modelmon.store.engine import shareable
from modelmon.store.features import new_reference, set_reference

MIN = 50


COUNTRIES = ["FR", "DE", "ES"]


def _stable(n: int) -> list[float]:
    """Evenly spaced normal quantiles: the same distribution at any n, without sampling noise
    (a randomly drawn stable feature is flagged 5% of the time at evidently's thresholds)."""
    return norm.ppf((np.arange(n) + 0.5) / n).tolist()


def _rows(rng: np.random.Generator, n: int, model: str, features: bool, shift: float) -> list[dict]:
    rows = events(rng, n, ["a", "b"], start=NOW - 3600, end=NOW - 60, model=model, prefix=model)
    stable = _stable(n)
    for i, r in enumerate(rows):
        r["digest"] = hashlib.sha256(r["request_id"].encode()).hexdigest()[:32]
        r["features"] = {
            "amount": float(rng.normal(shift, 1.0)),  # shifted by `shift` standard deviations
            "stable": stable[i],
            "country": COUNTRIES[i % 3],
            "cur_only": "x",
        } if features else None
    return rows


def _config(url: str, **features: Any) -> Config:
    return Config.model_validate({
        "database": {"url": url},
        "defaults": {"windows": ["1h"], "min_samples": MIN},
        "features": {"windows": ["1h"], **features},
    })


def _populate(engine: sa.Engine) -> None:
    rng = np.random.default_rng(11)
    store(engine, _rows(rng, 600, "m", True, shift=0.5))  # amount shifted by 0.5 sd
    store(engine, _rows(rng, 300, "plain", False, 0.0))  # a model without features
    store(engine, _rows(rng, 300, "nobase", True, 0.0))  # features, no reference
    n = 800
    reference = new_reference("m", {
        "amount": rng.normal(0.0, 1.0, n).tolist(),
        "stable": _stable(n),
        "country": [COUNTRIES[i % 3] for i in range(n)],
        "ref_only": rng.normal(0.0, 1.0, n).tolist(),
    }, "validation.csv", n)
    with engine.begin() as conn:
        set_reference(conn, "m", reference)


def _populated(url: str) -> str:
    engine = migrated_engine(url)
    _populate(engine)
    engine.dispose()
    return url


@pytest.fixture
def db(tmp_path: Path) -> str:
    return _populated(f"sqlite:///{tmp_path}/modelmon.db")


@pytest.fixture
def any_db(db_url: str) -> str:
    """SQLite and a throwaway PostgreSQL: the worker opens either from the URL."""
    return _populated(db_url)


def _latest(engine: sa.Engine, model: str, family: str) -> dict[tuple[str, str | None], dict]:
    with engine.connect() as conn:
        rows = [r for r in latest_results(conn, model) if r["monitor"] == family]
    return {(r["metric"], r["labels"].get("feature")): r for r in rows}


def test_families_detect_drift_report_one_sided_features_and_skip_models_without(any_db: str) -> None:
    db = any_db
    cfg = _config(db)
    engine = migrated_engine(db)
    sched = MonitorScheduler(cfg, engine)
    try:
        out = sched.run_once(NOW)
        worker_pid = sched._features.worker.pid
    finally:
        sched.stop()
        engine.dispose()
    engine = migrated_engine(db)
    assert {k: v for k, v in out.items() if v != "ok"} == {}
    assert worker_pid is not None and worker_pid != os.getpid()  # computed in the worker

    drift = _latest(engine, "m", "feature_drift")
    detected = {f: r["value"] for (m, f), r in drift.items() if m == "feature_drift_detected"}
    assert detected == {"amount": 1.0, "stable": 0.0, "country": 0.0}
    assert drift[("feature_drift_score", "amount")]["labels"]["stattest"] == "ks"  # 800 reference rows
    assert drift[("feature_drift_compared_features", None)]["value"] == 3
    assert drift[("feature_drift_share_ratio", None)]["value"] == pytest.approx(1 / 3)
    assert drift[("feature_reference_only_features", None)]["value"] == 1
    assert drift[("feature_current_only_features", None)]["value"] == 1

    quality = _latest(engine, "m", "data_quality")
    assert quality[("feature_missing_ratio", "ref_only")]["value"] == 1.0
    assert quality[("feature_missing_ratio", "cur_only")]["value"] == 0.0
    assert quality[("features_present_ratio", None)]["value"] == 1.0
    assert quality[("feature_unseen_category_ratio", "country")]["value"] == 0.0

    nobase = _latest(engine, "nobase", "feature_drift")
    assert nobase[("feature_drift_share_ratio", None)]["status"] == "no_baseline"
    assert nobase[("feature_current_only_features", None)]["value"] == 4

    for family in ("feature_drift", "data_quality"):
        assert _latest(engine, "plain", family) == {}
    with engine.connect() as conn:
        jobs = {r["job"]: r for r in runs(conn)}
    assert jobs["feature_drift:plain"]["last_error"] is None  # it ran, and had nothing to say
    engine.dispose()


def test_worker_restarts_above_its_rss_limit_and_after_dying(db: str) -> None:
    # "nobase" has features but no reference: no drift test, so its worker never imports
    # evidently (seconds); pandas and SQLAlchemy alone are above the smallest limit allowed.
    cfg = _config(db, worker_max_rss_bytes=64 * 1_048_576)
    engine = migrated_engine(db)
    sched = MonitorScheduler(cfg, engine)
    worker = sched._features.worker
    try:
        assert sched.run_job("feature_drift", "nobase", NOW) == "ok"
        assert worker.last_rss > cfg.features.worker_max_rss_bytes
        assert worker.started == 1 and worker.pid is None  # stopped after the job
        assert sched.run_job("data_quality", "nobase", NOW + 60) == "ok"
        assert worker.started == 2

        # A worker that dies during a job: the job fails with a message, the next one runs.
        cfg2 = _config(db)
        sched2 = MonitorScheduler(cfg2, engine)
        worker2 = sched2._features.worker
        outcome: list[str] = []
        job = threading.Thread(target=lambda: outcome.append(sched2.run_job("feature_drift", "nobase", NOW)))
        job.start()
        while worker2.pid is None:
            time.sleep(0.05)
        os.kill(worker2.pid, signal.SIGKILL)
        job.join(60)
        assert outcome and outcome[0].startswith("error: FeatureWorkerError")
        assert "ended (exit code -9)" in outcome[0]
        with engine.connect() as conn:
            error = {r["job"]: r for r in runs(conn)}["feature_drift:nobase"]["last_error"]
        assert "feature worker process" in error
        assert sched2.run_job("feature_drift", "nobase", NOW) == "ok"
        assert worker2.started == 2
        sched2.stop()
    finally:
        sched.stop()
        engine.dispose()


def test_feature_families_run_at_their_own_interval_and_can_be_disabled(db: str) -> None:
    engine = migrated_engine(db)
    cfg = Config.model_validate({
        "database": {"url": db}, "models": {"m": {"interval": "1m"}}, "features": {"interval": "7m"},
    })
    sched = MonitorScheduler(cfg, engine)
    sched._add_jobs()
    intervals = {j.family: j.interval for j in sched.jobs() if j.model == "m"}
    assert intervals["feature_drift"] == intervals["data_quality"] == 420.0
    assert intervals["shift"] == 60.0
    sched.stop()

    off = Config.model_validate({"database": {"url": db}, "features": {"enabled": False}})
    sched = MonitorScheduler(off, engine)
    out = sched.run_once(NOW)
    assert not any(job.startswith(("feature_drift:", "data_quality:")) for job in out)
    assert sched._features.worker.started == 0
    sched.stop()
    engine.dispose()


def test_in_memory_sqlite_computes_in_process() -> None:
    engine = migrated_engine("sqlite://")  # one connection per thread: this test's
    _populate(engine)
    sched = MonitorScheduler(_config("sqlite://"), engine)
    assert sched.run_job("feature_drift", "m", NOW) == "ok"
    assert sched._features.worker.started == 0
    detected = {f: r["value"] for (m, f), r in _latest(engine, "m", "feature_drift").items()
                if m == "feature_drift_detected"}
    assert detected["amount"] == 1.0
    sched.stop()
    engine.dispose()
    assert not shareable("sqlite://")
    assert not shareable("sqlite:///:memory:")
    assert not shareable("sqlite:///file:x?mode=memory&uri=true")
    assert shareable("sqlite:////tmp/x.db")
    assert shareable("postgresql://u:p@127.0.0.1/db")


def test_monitor_once_prints_the_feature_families(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    from modelmon.monitors.once import monitor_once

    assert monitor_once(_config(db)) == 0
    out = capsys.readouterr().out
    assert "feature_drift_detected" in out and "feature_missing_ratio" in out


def test_reference_cache_is_keyed_by_reference_time_and_bounded(tmp_path: Path) -> None:
    from modelmon.monitors.features import ReferenceCache

    engine = migrated_engine(f"sqlite:///{tmp_path}/ref.db")
    first = new_reference("m", {"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]}, "one.csv", 3)
    with engine.begin() as conn:
        set_reference(conn, "m", first)
        set_reference(conn, "n", new_reference("n", {"a": [1.0, 2.0, 3.0]}, "n.csv", 3))
    cache = ReferenceCache(max_values=6)  # room for m's 3 rows x 2 features only
    with engine.connect() as conn:
        got = cache.get(conn, "m")
        assert got is cache.get(conn, "m")  # parsed once
        assert got is not None and list(got.columns) == ["a", "b"]
        assert cache.get(conn, "n") is not None and len(cache) == 1  # m evicted
        assert cache.get(conn, "nobody") is None
    second = new_reference("m", {"c": [5.0, 6.0]}, "two.csv", 2)
    with engine.begin() as conn:
        set_reference(conn, "m", second)
    with engine.connect() as conn:
        newer = cache.get(conn, "m")
    assert newer is not None and list(newer.columns) == ["c"] and newer.created_at == second.created_at
    engine.dispose()
