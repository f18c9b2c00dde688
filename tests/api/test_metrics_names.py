"""/metrics?name[]=...: only the named samples, as prometheus_client's own WSGI app serves them."""

from __future__ import annotations

import gzip
import http.client

import pytest
from api_helpers import prediction_event, store_predictions
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from modelmon.alerts.endpoints import register_endpoints
from modelmon.alerts.exporter import MonitorResultsCollector
from modelmon.alerts.exposition import MetricsExposition
from modelmon.config import Config
from modelmon.http import HttpServer, Router

OM = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


@pytest.fixture(scope="module")
def metrics_port(module_engine):
    store_predictions(module_engine, [prediction_event()])
    cfg = Config.model_validate({"models": {"fraud": {"task": "binary", "positive_class": 1}}})
    live = CollectorRegistry()
    Counter("modelmon_test_events", "A live counter.", registry=live).inc(3)
    exposition = MetricsExposition(MonitorResultsCollector(module_engine, cfg), live, refresh_seconds=0)
    router = Router()
    register_endpoints(router, exposition, lambda: {"ok": True}, lambda: {"ok": True})
    server = HttpServer(router, "127.0.0.1", 0)
    server.start()
    yield server.port
    server.stop()


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def _samples(text: str, parse=text_string_to_metric_families) -> dict[str, set[str]]:
    return {f.name: {s.name for s in f.samples} for f in parse(text)}


def test_unfiltered_scrape_has_results_and_live_families(metrics_port) -> None:
    body, _ = _get(metrics_port, "/metrics")
    families = _samples(body.decode())
    assert "modelmon_last_prediction_timestamp_seconds" in families
    assert {"modelmon_store_up", "modelmon_test_events"} <= families.keys()


def test_name_filter_serves_only_that_family(metrics_port) -> None:
    body, _ = _get(metrics_port, "/metrics?name[]=modelmon_store_up")
    assert _samples(body.decode()) == {"modelmon_store_up": {"modelmon_store_up"}}


def test_name_filter_takes_several_names_from_results_and_live_part(metrics_port) -> None:
    path = "/metrics?name%5B%5D=modelmon_test_events_total&name[]=modelmon_last_prediction_timestamp_seconds"
    body, headers = _get(metrics_port, path, {"Accept": OM, "Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n")
    assert _samples(text, om_families) == {
        "modelmon_test_events": {"modelmon_test_events_total"},
        "modelmon_last_prediction_timestamp_seconds": {"modelmon_last_prediction_timestamp_seconds"},
    }


def test_name_filter_with_unknown_name_is_empty(metrics_port) -> None:
    body, _ = _get(metrics_port, "/metrics?name[]=no_such_metric")
    assert _samples(body.decode()) == {}
