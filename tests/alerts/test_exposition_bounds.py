"""/metrics at fleet scale: a cap on exposed models, a series budget, and reads of what is shown only."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelmon.alerts.exporter import MonitorResultsCollector
from modelmon.config import Config
from modelmon.contract import parse_prediction
from modelmon.monitors.base import MetricRow, Window, WindowedRow
from modelmon.monitors.results import record_run, write_results
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade
from modelmon.store.writes import write_batch

NOW = 1_700_000_000.0
CONFIGURED = ["c2", "c0", "c1"]
FLEET = 1000
ROWS_PER_MODEL = 3


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    """3 configured + 1000 discovered models, each with 3 result rows and one prediction;
    discovered model d<i>'s newest prediction is more recent the larger i is."""
    path = tmp_path_factory.mktemp("fleet") / "fleet.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    window = Window("1h", NOW - 3600, NOW)
    rows = [
        WindowedRow(window, MetricRow("accuracy_ratio", 0.9, 500, "ok")),
        WindowedRow(window, MetricRow("class_share_ratio", 0.2, 500, "ok", {"class": "1"})),
        WindowedRow(window, MetricRow("class_shift_psi", None, 500, "no_baseline", {"baseline": "rolling"})),
    ]
    discovered = [f"d{i:04d}" for i in range(FLEET)]
    events = []
    with engine.begin() as conn:
        for i, model in enumerate(CONFIGURED + discovered):
            write_results(conn, model, "quality", rows, NOW - 30)
            record_run(conn, f"quality:{model}", "quality", model, NOW - 30, 0.1, None)
            ts = NOW - 7200 + i * 5  # configured ones are the oldest
            events.append((parse_prediction({"request_id": f"r{i}", "model": model, "timestamp": ts,
                                             "prediction": 1}), None))
        write_batch(conn, events, [], [], now=NOW)
    yield engine
    engine.dispose()


def _cfg(**server: object) -> Config:
    return Config.model_validate({"models": {m: {} for m in CONFIGURED}, "server": server})


def _text(collector: MonitorResultsCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def _models(text: str, name: str = "modelmon_accuracy_ratio") -> list[str]:
    return [s.labels["model"] for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == name]


def _value(text: str, name: str, **labels: str) -> float | None:
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return None


def test_the_configured_models_then_the_most_recently_active_are_exposed(fleet) -> None:
    text = _text(MonitorResultsCollector(fleet, _cfg(), cache_seconds=0, clock=lambda: NOW))
    newest = [f"d{i:04d}" for i in range(FLEET - 197, FLEET)]
    assert sorted(_models(text)) == sorted(CONFIGURED + newest)
    # Every per-model family is cut the same way, the freshness gauge included.
    assert sorted(_models(text, "modelmon_last_prediction_timestamp_seconds")) == sorted(CONFIGURED + newest)
    assert len(set(_models(text, "modelmon_monitor_samples"))) == 200
    assert _value(text, "modelmon_metrics_models_omitted", reason="max_models") == FLEET - 197
    assert _value(text, "modelmon_metrics_models_omitted", reason="max_series") == 0
    assert _value(text, "modelmon_metrics_results_omitted") == (FLEET - 197) * ROWS_PER_MODEL


def test_the_cap_is_configurable_and_counts_configured_models(fleet) -> None:
    text = _text(MonitorResultsCollector(fleet, _cfg(metrics_max_models=2), cache_seconds=0, clock=lambda: NOW))
    assert sorted(_models(text)) == ["c0", "c1"]
    assert _value(text, "modelmon_metrics_models_omitted", reason="max_models") == FLEET + 1


def test_the_series_budget_keeps_whole_models_in_priority_order(fleet) -> None:
    budget = 1000
    cfg = _cfg(metrics_max_models=FLEET, metrics_max_series=budget)
    text = _text(MonitorResultsCollector(fleet, cfg, cache_seconds=0, clock=lambda: NOW))
    per_model: Counter[str] = Counter()
    for line in text.splitlines():
        if m := re.search(r'[{,]model="([^"]+)"', line):
            per_model[m.group(1)] += 1
    sizes = set(per_model.values())
    assert len(sizes) == 1, per_model  # every shown model is complete
    (size,) = sizes
    shown = budget // size
    assert sum(per_model.values()) <= budget < sum(per_model.values()) + size
    priority = sorted(CONFIGURED) + [f"d{i:04d}" for i in range(FLEET - 1, -1, -1)]
    assert sorted(per_model) == sorted(priority[:shown])
    assert _value(text, "modelmon_metrics_models_omitted", reason="max_series") == FLEET - shown  # of the 1000 candidates
    assert _value(text, "modelmon_metrics_models_omitted", reason="max_models") == 3


def test_only_the_exposed_models_results_are_read(fleet) -> None:
    read: set[str] = set()

    def spy(conn, cursor, statement: str, parameters, context, executemany) -> None:
        if "FROM monitor_latest" in statement and "count(" not in statement.lower():
            read.update(p for p in (parameters or ()) if isinstance(p, str))

    sa.event.listen(fleet, "before_cursor_execute", spy)
    try:
        text = _text(MonitorResultsCollector(fleet, _cfg(), cache_seconds=0, clock=lambda: NOW))
    finally:
        sa.event.remove(fleet, "before_cursor_execute", spy)
    assert read and read == set(_models(text))


def test_no_warning_repeats_while_the_cut_stays_the_same(fleet, caplog: pytest.LogCaptureFixture) -> None:
    collector = MonitorResultsCollector(fleet, _cfg(), cache_seconds=0, clock=lambda: NOW)
    with caplog.at_level("WARNING", logger="modelmon.alerts"):
        _text(collector)
        _text(collector)
    warnings = [r for r in caplog.records if "metrics_max_models" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
