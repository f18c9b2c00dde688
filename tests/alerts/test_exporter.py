"""The /metrics collector: fresh families per read, values only for status ok, promtool-clean."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelmon.alerts.exporter import MonitorResultsCollector
from modelmon.config import Config
from modelmon.contract import parse_prediction
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.tables import monitor_latest, monitor_results, monitor_runs
from modelmon.store.writes import write_batch

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
NOW = 1_700_000_000.0


def _row(model: str, monitor: str, metric: str, window: str, value: float | None, n: int,
         status: str = "ok", at: float = NOW, version: str = "*", **labels: str) -> dict:
    return {
        "model": model, "model_version": version, "monitor": monitor, "metric": metric,
        "window": window, "slice": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "labels": labels, "window_start": at - 3600, "window_end": at, "value": value,
        "sample_count": n, "status": status, "computed_at": at,
    }


def _run(model: str, monitor: str, success: float | None, attempt: float = NOW) -> dict:
    return {"job": f"{monitor}:{model}", "monitor": monitor, "model": model, "last_success": success,
            "last_attempt": attempt, "last_error": None if success else "boom", "last_duration_seconds": 0.25}


# One row per metric the issue lists, with every label kind it names.
FULL = [
    _row("fraud", "accuracy", "accuracy_ratio", "1h", 0.91, 400),
    _row("fraud", "accuracy", "accuracy_lower_ratio", "1h", 0.88, 400),
    _row("fraud", "accuracy", "labeled_predictions", "1h", 400, 400),
    _row("fraud", "accuracy", "label_coverage_ratio", "1h", 0.8, 500),
    _row("fraud", "accuracy", "accuracy_ratio", "5m", None, 12, "insufficient_data"),
    _row("fraud", "accuracy", "accuracy_ratio", "1d", 0.9, 5000, "ok", version="v2"),
    _row("fraud", "proxies", "estimated_accuracy_ratio", "1h", 0.9, 500),
    _row("fraud", "proxies", "mean_confidence_ratio", "1h", 0.86, 500),
    _row("fraud", "shift", "class_share_ratio", "1h", 0.1, 500, **{"class": "1"}),
    _row("fraud", "shift", "class_share_ratio", "1h", 0.9, 500, **{"class": "0"}),
    _row("fraud", "shift", "class_shift_psi", "1h", 0.04, 500, baseline="research"),
    _row("fraud", "shift", "class_shift_js_distance", "1h", 0.03, 500, baseline="research"),
    _row("fraud", "shift", "class_shift_chi2_pvalue", "1h", 0.4, 500, baseline="research"),
    _row("fraud", "shift", "class_shift_psi", "1h", None, 500, "no_baseline", baseline="rolling"),
    _row("fraud", "latency", "latency_seconds", "1h", 0.05, 500, quantile="0.5"),
    _row("fraud", "latency", "latency_seconds", "1h", 0.2, 500, quantile="0.99"),
    _row("fraud", "latency", "slo_error_budget_remaining_ratio", "28d", 0.7, 9000, slo="latency-300ms"),
    _row("fraud", "latency", "slo_burn_rate", "1h", 1.3, 500, slo="latency-300ms"),
    _row("fraud", "latency", "last_prediction_timestamp_seconds", "5m", NOW - 1, 1),  # read live instead
    _row("fraud", "fairness", "slice_selection_rate_ratio", "1d", 0.1, 300, attribute="sex", slice="f"),
    _row("fraud", "fairness", "fairness_demographic_parity_difference", "1d", 0.02, 600, attribute="sex"),
    _row("fraud", "fairness", "fairness_disparate_impact_ratio", "1d", 0.85, 600, attribute="sex"),
    _row("fraud", "fairness", "fairness_equal_opportunity_difference", "1d", 0.05, 600, attribute="sex"),
]


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def _cfg(**models: dict) -> Config:
    return Config.model_validate({"models": models or {"fraud": {"task": "binary", "positive_class": 1}}})


def _insert(engine, rows: list[dict], runs: list[dict] | None = None) -> None:
    """Store rows as the scheduler would: all in the history, and per (model, monitor)
    the latest pass's rows replacing that job's rows in `monitor_latest`."""
    latest: dict[tuple[str, str], float] = {}
    for r in rows:
        key = (r["model"], r["monitor"])
        latest[key] = max(latest.get(key, r["computed_at"]), r["computed_at"])
    with engine.begin() as conn:
        if rows:
            conn.execute(monitor_results.insert(), rows)
        for (model, monitor), at in latest.items():
            m = monitor_latest.c
            conn.execute(monitor_latest.delete().where(m.model == model, m.monitor == monitor))
            conn.execute(monitor_latest.insert(), [r for r in rows if (r["model"], r["monitor"]) == (model, monitor)
                                                   and r["computed_at"] == at])
        if runs is None:  # the scheduler's bookkeeping: last_success = the pass's computed_at
            runs = [_run(m, mon, at, at) for (m, mon), at in sorted(latest.items())]
        for run in runs:
            conn.execute(monitor_runs.delete().where(monitor_runs.c.job == run["job"]))
            conn.execute(monitor_runs.insert(), run)


def _scrape(collector: MonitorResultsCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            # Prometheus drops empty-valued labels on ingestion; compare the same way.
            out[(s.name, frozenset((k, v) for k, v in s.labels.items() if v != ""))] = s.value
    return out


def _get(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_exposition_of_every_metric_passes_promtool(engine, tmp_path: Path) -> None:
    _insert(engine, FULL)
    with engine.begin() as conn:  # as ingest stores it: with its rollups, which the gauge reads
        event = parse_prediction({"request_id": "r1", "model": "fraud", "model_version": "v1",
                                  "timestamp": NOW - 5, "prediction": 1})
        write_batch(conn, [(event, None)], [], [], now=NOW - 4)
    text = _scrape(MonitorResultsCollector(engine, _cfg(), cache_seconds=0, clock=lambda: NOW))
    (tmp_path / "metrics.txt").write_text(text)
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr + text

    s = _samples(text)
    base = {"model": "fraud", "model_version": "*"}
    assert _get(s, "modelmon_accuracy_ratio", **base, window="1h") == pytest.approx(0.91)
    assert _get(s, "modelmon_accuracy_ratio", model="fraud", model_version="v2", window="1d") == pytest.approx(0.9)
    assert _get(s, "modelmon_class_share_ratio", **base, window="1h", **{"class": "1"}) == pytest.approx(0.1)
    assert _get(s, "modelmon_class_shift_psi", **base, window="1h", baseline="research") == pytest.approx(0.04)
    assert _get(s, "modelmon_latency_seconds", **base, window="1h", quantile="0.99") == pytest.approx(0.2)
    assert _get(s, "modelmon_latency_seconds_count", **base, window="1h") == 500
    assert _get(s, "modelmon_slice_selection_rate_ratio", **base, window="1d", attribute="sex", slice="f") == 0.1
    assert _get(s, "modelmon_slo_burn_rate", **base, window="1h", slo="latency-300ms") == pytest.approx(1.3)
    assert _get(s, "modelmon_last_prediction_timestamp_seconds", model="fraud") == NOW - 5
    assert _get(s, "modelmon_monitor_last_success_timestamp_seconds", monitor="shift", model="fraud") == NOW
    assert _get(s, "modelmon_store_up") == 1
    # Not-ok rows expose no value, only their sample count and status.
    assert _get(s, "modelmon_accuracy_ratio", **base, window="5m") is None
    assert _get(s, "modelmon_class_shift_psi", **base, window="1h", baseline="rolling") is None
    assert _get(s, "modelmon_monitor_samples", **base, monitor="accuracy", metric="accuracy_ratio",
                window="5m", status="insufficient_data") == 12
    assert _get(s, "modelmon_monitor_samples", **base, monitor="shift", metric="class_shift_psi",
                window="1h", baseline="rolling", status="no_baseline") == 500
    # The monitors' own last_prediction_timestamp row is not exposed twice.
    assert sum(1 for name, _ in s if name == "modelmon_last_prediction_timestamp_seconds") == 1


def test_label_shift_results_are_exposed_as_stored(engine) -> None:
    """The shift monitor's label-distribution rows (what ModelmonLabelShift reads), end to end."""
    from modelmon.monitors.shift import compare

    research = compare("label", {"0": 700, "1": 300}, {"0": 0.9, "1": 0.1}, "research", 100)
    rolling = compare("label", {"0": 40, "1": 20}, {"0": 0.5, "1": 0.5}, "rolling", 100, 500)
    rows = [_row("fraud", "shift", r.metric, "1h", r.value, r.sample_count, r.status, **r.labels)
            for r in research + rolling]
    _insert(engine, rows)
    with engine.connect() as conn:
        stored = {(r.metric, r.slice): r for r in conn.execute(
            monitor_results.select().where(monitor_results.c.metric.like("label_shift_%"))
        )}
    s = _samples(_scrape(MonitorResultsCollector(engine, _cfg(), cache_seconds=0, clock=lambda: NOW)))
    base = {"model": "fraud", "model_version": "*", "window": "1h"}
    for stat in ("psi", "js_distance", "chi2_pvalue"):
        metric = f"label_shift_{stat}"
        row = stored[(metric, "baseline=research")]
        assert row.status == "ok" and row.value is not None
        assert _get(s, f"modelmon_{metric}", **base, baseline="research") == pytest.approx(row.value)
        assert _get(s, "modelmon_monitor_samples", **base, monitor="shift", metric=metric,
                    baseline="research", status="ok") == 1000
        # 60 labels < min_labels: no value, only the count and the reason.
        assert stored[(metric, "baseline=rolling")].status == "insufficient_data"
        assert _get(s, f"modelmon_{metric}", **base, baseline="rolling") is None
        assert _get(s, "modelmon_monitor_samples", **base, monitor="shift", metric=metric,
                    baseline="rolling", status="insufficient_data") == 60
    assert _get(s, "modelmon_label_shift_psi", **base, baseline="research") > 0.2  # a real shift
    text = _scrape(MonitorResultsCollector(engine, _cfg(), cache_seconds=0, clock=lambda: NOW))
    assert "# HELP modelmon_label_shift_psi Population stability index of the label distribution" in text


def test_only_the_latest_run_is_exposed_and_a_removed_model_disappears(engine) -> None:
    old = _row("fraud", "shift", "class_shift_psi", "1h", 0.5, 500, at=NOW - 60, baseline="research")
    new = _row("fraud", "shift", "class_share_ratio", "1h", 0.2, 500, **{"class": "1"})
    churn = _row("churn", "shift", "class_shift_psi", "1h", 0.3, 500, at=NOW - 30, baseline="research")
    _insert(engine, [old, new, churn], runs=[_run("fraud", "shift", NOW), _run("churn", "shift", NOW - 30, NOW - 30)])
    clock = [NOW]
    collector = MonitorResultsCollector(engine, _cfg(), cache_seconds=0, stale_after=3600, clock=lambda: clock[0])
    s = _samples(_scrape(collector))
    # fraud's latest run no longer produces the PSI row: the series is gone.
    assert _get(s, "modelmon_class_shift_psi", model="fraud", model_version="*", window="1h", baseline="research") is None
    assert _get(s, "modelmon_class_share_ratio", model="fraud", model_version="*", window="1h", **{"class": "1"}) == 0.2
    # churn is not configured but discovered and fresh: shown ...
    assert _get(s, "modelmon_class_shift_psi", model="churn", model_version="*", window="1h", baseline="research") == 0.3
    # ... until no run refreshed it for stale_after; configured models stay.
    clock[0] = NOW + 4000
    s = _samples(_scrape(collector))
    assert not any(dict(labels).get("model") == "churn" for _, labels in s)
    assert _get(s, "modelmon_class_share_ratio", model="fraud", model_version="*", window="1h", **{"class": "1"}) == 0.2
    # With discovery off, an unconfigured model is never exposed.
    cfg = Config.model_validate({"models": {"fraud": {}}, "monitors": {"discover_models": False}})
    s = _samples(_scrape(MonitorResultsCollector(engine, cfg, cache_seconds=0, clock=lambda: NOW)))
    assert not any(dict(labels).get("model") == "churn" for _, labels in s)


def test_never_succeeded_monitor_reports_zero(engine) -> None:
    _insert(engine, [], runs=[_run("fraud", "accuracy", None)])
    s = _samples(_scrape(MonitorResultsCollector(engine, _cfg(), cache_seconds=0, clock=lambda: NOW)))
    assert _get(s, "modelmon_monitor_last_success_timestamp_seconds", monitor="accuracy", model="fraud") == 0


def test_scrapes_within_the_cache_period_share_one_store_read(engine) -> None:
    _insert(engine, FULL[:3])
    clock = [NOW]
    collector = MonitorResultsCollector(engine, _cfg(), cache_seconds=5, clock=lambda: clock[0])
    first = _scrape(collector)
    _insert(engine, [_row("fraud", "proxies", "mean_confidence_ratio", "1h", 0.7, 500, at=NOW + 1)])
    assert _scrape(collector) == first
    clock[0] += 6
    assert "modelmon_mean_confidence_ratio" in _scrape(collector)


def test_unreachable_store_is_reported_not_raised(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/missing/dir/db.sqlite")
    s = _samples(_scrape(MonitorResultsCollector(engine, _cfg(), cache_seconds=0)))
    assert _get(s, "modelmon_store_up") == 0
    assert len(s) == 1


def test_collect_is_quick(engine) -> None:
    rows = [_row("fraud", "fairness", "slice_selection_rate_ratio", w, 0.1, 300, attribute="a", slice=str(i))
            for i in range(200) for w in ("5m", "1h", "1d")]
    _insert(engine, rows)
    collector = MonitorResultsCollector(engine, _cfg(), cache_seconds=0, clock=lambda: NOW)
    start = time.perf_counter()
    text = _scrape(collector)
    assert text.count("modelmon_slice_selection_rate_ratio{") == 600
    assert time.perf_counter() - start < 5
