"""Canary verdict end to end: store -> modelmon's scheduler -> /metrics -> Prometheus -> Alertmanager -> webhook.

Two versions of one model are written straight into the store through the
ingest write path (`write_batch`, which also maintains the rollups the
monitors read); a real `modelmon monitor` runtime (scheduler + HTTP, no
Kafka) computes the `compare` family every second and serves /metrics; a real
Prometheus scrapes it and evaluates the generated rules (`for:` x 0.005, so
ModelmonCandidateWorse holds for 3 s), and Alertmanager routes to the test's
webhook. A candidate 5 points less accurate on 3,000 labelled predictions per
version must page; an equally accurate candidate must stay quiet although its
verdict (`not_worse`, value 0) is there.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from promstack import promstack

from modelmon.config import Config
from modelmon.contract import Feedback, Prediction, score_summary
from modelmon.store.rollups import Specs
from modelmon.store.writes import write_batch

pytestmark = pytest.mark.integration

N = 3000  # labelled predictions per version: enough to tell 5 points from the 2-point margin
FOR_SCALE = 0.005  # the alert's `for: 10m` becomes 3s
BASELINE_ACCURACY = 0.90


def _config(tmp_path: Path) -> Config:
    return Config.model_validate({
        "database": {"url": f"sqlite:///{tmp_path}/modelmon.db"},
        "server": {"host": "127.0.0.1", "port": 0},
        # Windows are whole fine buckets: 1 s buckets allow a short window.
        "rollups": {"fine": "1s", "coarse": "1m"},
        "models": {"scorer": {
            "task": "binary", "positive_class": 1, "classes": ["0", "1"], "windows": ["10m"], "interval": "1s",
            "min_samples": 200, "min_labels": 200, "compare": "auto",
        }},
    })


def _version(version: str, accuracy: float, start: float, end: float) -> tuple[list, list]:
    """N predictions spread over [start, end), all labelled; exactly `accuracy` of them right."""
    preds, labels = [], []
    right = round(accuracy * 100)
    for i in range(N):
        ts = start + (end - start) * i / N
        truth = str(i % 2)
        predicted = truth if i % 100 < right else str(1 - int(truth))
        p = 0.8 if predicted == "1" else 0.2
        scores = {"0": round(1 - p, 3), "1": p}
        score_pred, score_max, entropy = score_summary(scores, predicted)
        rid = f"{version}-{i}"
        preds.append((Prediction(
            request_id=rid, model="scorer", model_version=version, ts=ts, prediction=predicted,
            scores=scores, score_pred=score_pred, score_max=score_max, entropy=entropy,
            latency_seconds=0.02, status="ok", slices=None, features=None, schema_version=1,
            digest=f"p{rid}",
        ), None))
        labels.append((Feedback(
            request_id=rid, model="scorer", label=truth, ts=ts + 1.0, schema_version=1, digest=f"f{rid}",
        ), None))
    return preds, labels


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _run(tmp_path: Path, candidate_accuracy: float) -> dict[str, Any]:
    cfg = _config(tmp_path)
    expected = "worse" if candidate_accuracy < BASELINE_ACCURACY else "not_worse"

    def warmup(runtime: Any) -> None:
        # v3 has served for five minutes; the canary v4 started two minutes ago.
        # `auto` takes the two busiest versions, the one first seen earlier as baseline.
        now = time.time()
        base = _version("v3", BASELINE_ACCURACY, now - 300, now - 5)
        cand = _version("v4", candidate_accuracy, now - 120, now - 5)
        with runtime.engine.begin() as conn:
            write_batch(conn, base[0] + cand[0], base[1] + cand[1], [], source="http", specs=Specs(cfg))
        deadline = time.monotonic() + 60
        line = f'verdict="{expected}"'
        while not any(
            s.startswith("modelmon_version_verdict{") and line in s
            for s in _metrics(runtime.url + "/metrics").splitlines()
        ):
            assert time.monotonic() < deadline, "no version verdict on /metrics after 60 s"
            time.sleep(0.5)

    with promstack(cfg, tmp_path / "stack", with_ingest=False, for_scale=FOR_SCALE, warmup=warmup) as stack:
        result: dict[str, Any] = {}
        if expected == "worse":
            started = time.monotonic()
            result["alert"] = stack.webhook.wait_for(
                lambda a: a["labels"].get("alertname") == "ModelmonCandidateWorse", timeout=60
            )
            result["seconds"] = time.monotonic() - started
        else:
            # The verdict is there in Prometheus, then wait well past the hold.
            deadline = time.monotonic() + 30
            while not stack.prometheus.query('modelmon_version_worse{model="scorer"}'):
                assert time.monotonic() < deadline, "Prometheus never saw modelmon_version_worse"
                time.sleep(0.5)
            time.sleep(3 * 600 * FOR_SCALE + 10)
        result["worse"] = stack.prometheus.query('modelmon_version_worse{model="scorer"}')
        result["verdict"] = stack.prometheus.query('modelmon_version_verdict{model="scorer"}')
        result["accuracy"] = stack.prometheus.query('modelmon_version_accuracy_difference{model="scorer"}')
        result["notifications"] = stack.webhook.alerts(status=None)
        result["prometheus_alerts"] = stack.prometheus.alerts()
        result["rule_errors"] = stack.prometheus.rule_health()
        return result


def _pair(series: list[dict[str, Any]]) -> set[tuple[str, str, str, str, str]]:
    return {
        (s["metric"]["model_version"], s["metric"]["window"], s["metric"]["baseline"],
         s["metric"]["candidate"], s["metric"].get("verdict", ""))
        for s in series
    }


def test_worse_canary_pages_through_prometheus_and_alertmanager(tmp_path: Path) -> None:
    result = _run(tmp_path, candidate_accuracy=0.85)
    assert result["rule_errors"] == []
    alert = result["alert"]
    assert alert is not None, f"no ModelmonCandidateWorse notification; Prometheus alerts: {result['prometheus_alerts']}"
    print(f"\ncandidate worse: verdict on /metrics -> webhook in {result['seconds']:.1f} s")
    labels = alert["labels"]
    assert (labels["model"], labels["model_version"], labels["window"]) == ("scorer", "*", "10m")
    assert (labels["baseline"], labels["candidate"], labels["severity"]) == ("v3", "v4", "page")
    assert alert["_path"].endswith("/page")
    description = alert["annotations"]["description"]
    assert "reason: accuracy_lower" in description and "accuracy -0.05 [" in description, description
    assert alert["annotations"]["runbook_url"].endswith("#runbook-modelmoncandidateworse")
    assert [s["value"] for s in result["worse"]] == [1.0]
    assert _pair(result["verdict"]) == {("*", "10m", "v3", "v4", "worse")}
    assert result["accuracy"][0]["value"] == pytest.approx(-0.05, abs=1e-9)
    assert {a["labels"]["alertname"] for a in result["notifications"]} == {"ModelmonCandidateWorse"}


def test_equal_canary_stays_quiet(tmp_path: Path) -> None:
    result = _run(tmp_path, candidate_accuracy=BASELINE_ACCURACY)
    assert result["rule_errors"] == []
    # The quiet is a verdict, not missing data: not_worse, value 0, accuracy difference 0.
    assert [s["value"] for s in result["worse"]] == [0.0]
    assert _pair(result["verdict"]) == {("*", "10m", "v3", "v4", "not_worse")}
    assert result["accuracy"][0]["value"] == pytest.approx(0.0, abs=1e-9)
    assert result["notifications"] == []
    assert [a for a in result["prometheus_alerts"] if a["labels"]["alertname"] == "ModelmonCandidateWorse"] == []
    assert [a for a in result["prometheus_alerts"] if a["state"] == "firing"] == []
