"""GET /v1/models, /v1/models/{model}/summary and the prediction audit trace."""

from __future__ import annotations

import math
import time
from datetime import datetime
from urllib.parse import quote

import pytest
from api_helpers import feedback_event, make_config, prediction_event, serve, store_predictions

from modelmon.monitors.base import MetricRow, Window, WindowedRow
from modelmon.monitors.results import record_run, write_results
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_prediction_trace_has_everything_stored(engine):
    event = prediction_event("r-1")
    store_predictions(engine, [prediction_event("r-0"), event])
    with serve(make_config(), engine) as s:
        s.post_json("/v1/feedback", feedback_event("r-1", label=0))
        r = s.request("GET", "/v1/models/fraud/predictions/r-1")
    assert r.status == 200, r.body
    t = r.json()
    assert t["model"] == "fraud" and t["request_id"] == "r-1" and t["model_version"] == "v3"
    assert t["time"]["epoch"] == _epoch(event["timestamp"])
    assert _epoch(t["time"]["timestamp"]) == t["time"]["epoch"]
    assert t["prediction"] == "1" and t["scores"] == {"0": 0.2, "1": 0.8}
    assert t["score_pred"] == 0.8 and t["score_max"] == 0.8
    assert math.isclose(t["entropy"], -(0.2 * math.log(0.2) + 0.8 * math.log(0.8)))
    assert t["latency_seconds"] == 0.0125 and t["status"] == "ok"
    assert t["slices"] == {"region": "eu"} and t["features"] == {"amount": 12.5, "country": "FR"}
    assert t["kafka"] == {"topic": "modelmon.predictions", "partition": 0, "offset": 1}
    assert abs(t["ingested_at"]["epoch"] - time.time()) < 60
    label = t["label"]
    assert label["value"] == "0" and label["source"] == "http" and label["kafka"] is None
    assert label["time"]["epoch"] == _epoch("2026-11-23T10:00:00Z")
    assert t["conflicting_duplicates"] == []


def test_prediction_without_label_and_absent_ones(engine):
    store_predictions(engine, [prediction_event("r-1")])
    with serve(make_config(), engine) as s:
        assert s.request("GET", "/v1/models/fraud/predictions/r-1").json()["label"] is None
        for path in ("/v1/models/fraud/predictions/nope", "/v1/models/other/predictions/r-1",
                     "/v1/models/bad%20name/predictions/r-1", "/v1/models/fraud/predictions/" + "x" * 300,
                     "/v1/models/fraud/predictions/a%00b"):
            r = s.request("GET", path)
            assert r.status == 404, path
            assert r.json()["error"]


@pytest.mark.parametrize("rid", ["a/b", "é-ü-中", "with space", "100%", "q?x=1#f", "a%2Fb", "..", "+plus+"])
def test_request_ids_with_odd_characters_round_trip(engine, rid):
    store_predictions(engine, [prediction_event(rid)])
    with serve(make_config(), engine) as s:
        r = s.request("GET", "/v1/models/fraud/predictions/" + quote(rid, safe=""))
        assert r.status == 200, r.body
        assert r.json()["request_id"] == rid
        assert s.request("GET", "/v1/models/fraud/predictions/%FF%FE").status in (400, 404)


def test_models_lists_seen_and_configured(engine):
    now = time.time()
    store_predictions(engine, [
        prediction_event("a", timestamp=now - 10),
        prediction_event("b", timestamp=now - 7200),
        prediction_event("c", timestamp=now - 3 * 86400),
        prediction_event("x", model="churn", timestamp=now - 100),
    ])
    with serve(make_config(), engine) as s:
        r = s.request("GET", "/v1/models")
    assert r.status == 200
    models = {m["name"]: m for m in r.json()["models"]}
    assert sorted(models) == ["churn", "fraud"]
    fraud = models["fraud"]
    assert fraud["configured"] is True
    assert fraud["last_prediction"]["epoch"] == pytest.approx(now - 10)
    assert fraud["first_prediction"]["epoch"] == pytest.approx(now - 3 * 86400)
    assert fraud["predictions_recent"] == {"1h": 1, "24h": 2}
    assert models["churn"]["configured"] is False
    assert models["churn"]["predictions_recent"] == {"1h": 1, "24h": 1}


def test_models_on_an_empty_store_lists_configured_ones(engine):
    with serve(make_config(), engine) as s:
        models = s.request("GET", "/v1/models").json()["models"]
    assert models == [{"name": "fraud", "configured": True, "first_prediction": None,
                       "last_prediction": None, "predictions_recent": {"1h": 0, "24h": 0}}]


def test_summary_shows_latest_results_exactly(engine):
    now = 1_795_000_000.0
    win = Window("1h", now - 3600, now)
    old = [WindowedRow(win, MetricRow("accuracy_ratio", 0.5, 400))]
    new = [
        WindowedRow(win, MetricRow("accuracy_ratio", 0.9123456789, 512)),
        WindowedRow(win, MetricRow("accuracy_ratio", None, 12, "insufficient_data", {"slice": "region=eu"})),
        WindowedRow(win, MetricRow("class_ratio", math.inf, 50)),
    ]
    with engine.begin() as conn:
        write_results(conn, "fraud", "accuracy", old, now - 60)
        write_results(conn, "fraud", "accuracy", new, now)
        record_run(conn, "accuracy:fraud", "accuracy", "fraud", now, 0.25, None)
    with serve(make_config(), engine) as s:
        r = s.request("GET", "/v1/models/fraud/summary")
        assert r.status == 200, r.body
        body = r.json()
        assert s.request("GET", "/v1/models/unknown/summary").status == 404
        assert s.request("GET", "/v1/models/bad%2Fname/summary").status == 404
    assert body["model"] == "fraud" and body["configured"] is True
    rows = {(x["metric"], x["slice"]): x for x in body["results"]}
    assert len(body["results"]) == 3
    acc = rows[("accuracy_ratio", "")]
    assert (acc["value"], acc["sample_count"], acc["status"], acc["window"]) == (0.9123456789, 512, "ok", "1h")
    assert (acc["window_start"], acc["window_end"], acc["computed_at"]) == (now - 3600, now, now)
    assert _epoch(acc["computed_at_time"]) == now
    eu = rows[("accuracy_ratio", "slice=region=eu")]
    assert (eu["value"], eu["status"], eu["labels"]) == (None, "insufficient_data", {"slice": "region=eu"})
    assert rows[("class_ratio", "")]["value"] is None  # infinity is not JSON
    (run,) = body["monitor_runs"]
    assert run["monitor"] == "accuracy" and run["last_success"]["epoch"] == now and run["last_error"] is None
