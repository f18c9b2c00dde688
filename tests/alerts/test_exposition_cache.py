"""/metrics serves bytes rendered once per refresh, plus the live registry; freshness ignores the future."""

from __future__ import annotations

import gzip

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from modelmon.alerts.exporter import MonitorResultsCollector
from modelmon.alerts.exposition import MetricsExposition
from modelmon.config import Config
from modelmon.contract import parse_prediction
from modelmon.monitors.base import MetricRow, Window, WindowedRow
from modelmon.monitors.results import record_run, write_results
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.tables import monitor_runs
from modelmon.store.writes import write_batch

NOW = 1_700_000_000.0
OM = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


@pytest.fixture
def engine(db_url: str):
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def _cfg() -> Config:
    return Config.model_validate({"models": {"fraud": {"task": "binary", "positive_class": 1}}})


def _store(engine, value: float, at: float = NOW - 10) -> None:
    rows = [WindowedRow(Window("1h", at - 3600, at), MetricRow("accuracy_ratio", value, 500, "ok"))]
    with engine.begin() as conn:
        write_results(conn, "fraud", "accuracy", rows, at)
        record_run(conn, "accuracy:fraud", "accuracy", "fraud", at, 0.1, None)


def _value(text: str, name: str, **labels: str) -> float | None:
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def _text(collector: MonitorResultsCollector) -> str:
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_last_prediction_time_ignores_predictions_stamped_in_the_future(engine) -> None:
    events = [
        parse_prediction({"request_id": "old", "model": "fraud", "timestamp": NOW - 3600, "prediction": 1}),
        parse_prediction({"request_id": "far", "model": "fraud", "timestamp": "9999-12-31T23:59:59Z",
                          "prediction": 1}),
    ]
    with engine.begin() as conn:
        write_batch(conn, [(e, None) for e in events], [], [], now=NOW)
    text = _text(MonitorResultsCollector(engine, _cfg(), cache_seconds=0, clock=lambda: NOW))
    assert _value(text, "modelmon_last_prediction_timestamp_seconds", model="fraud") == NOW - 3600


def test_jobs_that_never_ran_are_exposed_as_zero(engine) -> None:
    with engine.begin() as conn:  # as the scheduler inserts a job it has only scheduled
        conn.execute(monitor_runs.insert(), [{"job": "shift:fraud", "monitor": "shift", "model": "fraud"}])
    text = _text(MonitorResultsCollector(engine, _cfg(), cache_seconds=0, clock=lambda: NOW))
    assert _value(text, "modelmon_monitor_last_success_timestamp_seconds", monitor="shift", model="fraud") == 0


def _counting(engine) -> list[str]:
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_scrapes_serve_the_last_rendering_without_reading_the_store(engine) -> None:
    _store(engine, 0.9)
    live = CollectorRegistry()
    served = Counter("modelmon_test_events", "A live metric.", registry=live)
    exposition = MetricsExposition(
        MonitorResultsCollector(engine, _cfg(), clock=lambda: NOW), live, refresh_seconds=60)
    exposition.refresh()
    statements = _counting(engine)
    first, content_type, _ = exposition.serve()
    assert content_type.startswith("text/plain; version=0.0.4")
    _store(engine, 0.5)
    statements.clear()
    served.inc(3)
    for _ in range(5):
        body, _, _ = exposition.serve()
    assert statements == []
    text = body.decode()
    assert _value(text, "modelmon_accuracy_ratio", model="fraud", model_version="*", window="1h") == 0.9
    assert _value(text, "modelmon_test_events_total") == 3  # the live part is live
    assert _value(text, "modelmon_store_up") == 1
    exposition.refresh()
    text = exposition.serve()[0].decode()
    assert _value(text, "modelmon_accuracy_ratio", model="fraud", model_version="*", window="1h") == 0.5


def test_openmetrics_and_gzip_are_negotiated(engine) -> None:
    _store(engine, 0.9)
    live = CollectorRegistry()
    Counter("modelmon_test_events", "A live metric.", registry=live).inc()
    exposition = MetricsExposition(MonitorResultsCollector(engine, _cfg(), clock=lambda: NOW), live)
    exposition.refresh()
    plain, _, headers = exposition.serve(OM, "")
    assert headers == []
    text = plain.decode()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    names = {s.name for f in om_families(text) for s in f.samples}
    assert {"modelmon_accuracy_ratio", "modelmon_test_events_total", "modelmon_store_up"} <= names
    for _ in range(2):  # the compressed rendering is kept too
        zipped, content_type, headers = exposition.serve(OM, "deflate, gzip")
        assert ("Content-Encoding", "gzip") in headers
        assert content_type.startswith("application/openmetrics-text")
        assert gzip.decompress(zipped) == plain
    text_plain, _, _ = exposition.serve("text/plain", "gzip")
    assert b"# EOF" not in gzip.decompress(text_plain)


def test_a_failed_refresh_reports_the_store_down(engine, tmp_path) -> None:
    broken = make_engine(f"sqlite:///{tmp_path}/missing/dir/db.sqlite")
    exposition = MetricsExposition(MonitorResultsCollector(broken, _cfg()), CollectorRegistry())
    exposition.refresh()
    text = exposition.serve()[0].decode()
    assert _value(text, "modelmon_store_up") == 0
    assert "modelmon_accuracy_ratio" not in text


def test_the_refresher_thread_renders_in_the_background(engine) -> None:
    _store(engine, 0.9)
    exposition = MetricsExposition(
        MonitorResultsCollector(engine, _cfg(), clock=lambda: NOW), CollectorRegistry(), refresh_seconds=0.05)
    exposition.start()
    try:
        assert exposition.wait_rendered(10)
        _store(engine, 0.4)
        started = exposition.rendered_count
        assert exposition.wait_rendered(10, after=started + 1)
        text = exposition.serve()[0].decode()
    finally:
        exposition.stop()
    assert _value(text, "modelmon_accuracy_ratio", model="fraud", model_version="*", window="1h") == 0.4


def test_the_served_text_has_the_same_series_as_the_registry_families(engine) -> None:
    """The fast renderer /metrics serves and prometheus_client's agree, in both formats."""
    at = NOW - 10
    w = Window("1h", at - 3600, at)
    rows = [
        WindowedRow(w, MetricRow("latency_seconds", 0.05, 500, "ok", {"quantile": "0.5"})),
        WindowedRow(w, MetricRow("latency_seconds", 0.2, 500, "ok", {"quantile": "0.99"}, "v2")),
        WindowedRow(w, MetricRow("slice_selection_rate_ratio", 0.1, 30, "ok",
                                 {"attribute": "city", "slice": 'Sa"o \\ Paulo\nX'})),
        WindowedRow(w, MetricRow("requests_per_second", float("inf"), 3, "ok")),
        WindowedRow(w, MetricRow("accuracy_ratio", None, 3, "insufficient_data", {"class": ""})),
    ]
    with engine.begin() as conn:
        write_results(conn, "fraud", "mixed", rows, at)
        record_run(conn, "mixed:fraud", "mixed", "fraud", at, 0.1, None)
    collector = MonitorResultsCollector(engine, _cfg(), cache_seconds=0, clock=lambda: NOW)
    reference = {(s.name, frozenset(s.labels.items()), s.value)
                 for f in text_string_to_metric_families(_text(collector)) for s in f.samples
                 if s.name != "modelmon_store_up"}
    exposition = MetricsExposition(collector, CollectorRegistry())
    exposition.refresh()
    for accept, parse in (("", text_string_to_metric_families), (OM, om_families)):
        text = exposition.serve(accept)[0].decode()
        served = {(s.name, frozenset(s.labels.items()), s.value) for f in parse(text) for s in f.samples
                  if not s.name.startswith("modelmon_metrics_refresh") and s.name != "modelmon_store_up"}
        assert served == reference


def test_store_up_drops_when_no_refresh_completed_for_three_periods(engine) -> None:
    import time

    _store(engine, 0.9)
    later = [0.0]
    exposition = MetricsExposition(MonitorResultsCollector(engine, _cfg(), clock=lambda: NOW),
                                   CollectorRegistry(), refresh_seconds=30,
                                   clock=lambda: time.monotonic() + later[0])
    exposition.refresh()
    assert _value(exposition.serve()[0].decode(), "modelmon_store_up") == 1
    later[0] = 91.0  # a refresher stuck for more than 3 x 30 s
    assert _value(exposition.serve()[0].decode(), "modelmon_store_up") == 0
