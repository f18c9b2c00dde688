"""End to end with the real binaries: Kafka -> modelmon -> Prometheus -> Alertmanager -> webhook.

A class shift injected into the prediction stream must page through the whole
chain; a stable stream of the same length must not produce a single
notification. The shift-to-webhook time is printed (`pytest -s` shows it).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer
from promstack import promstack

from modelmon.config import Config
from modelmon.monitors.baselines import store_baseline
from modelmon.store.engine import make_engine
from modelmon.store.migrate import upgrade

pytestmark = pytest.mark.integration

RATE = 50  # events per second
WARM_SECONDS = 5.0
PHASE_SECONDS = 20.0
FOR_SCALE = 0.005  # the class-shift alert's `for: 10m` becomes 3s


class Stream:
    """Deterministic prediction stream: 10% class "1" when stable, 60% once shifted."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
        self.topic = topic
        self.shifted = False
        self.shift_started: float | None = None
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _event(self, i: int) -> bytes:
        positive = (i % 10 < 6) if self.shifted else (i % 10 == 0)
        p = 0.8 if positive else 0.2
        return json.dumps({
            "request_id": f"r{i}-{uuid.uuid4().hex[:8]}",
            "model": "fraud",
            "model_version": "v1",
            "timestamp": time.time(),
            "prediction": "1" if positive else "0",
            "scores": {"0": round(1 - p, 3), "1": p},
            "latency_ms": 20 + (i % 5) * 10,
        }).encode()

    def send_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self._stop.is_set():
            tick = time.monotonic()
            for _ in range(RATE // 10):
                if self.shifted and self.shift_started is None:
                    self.shift_started = time.monotonic()
                self.producer.send(self.topic, self._event(self.sent))
                self.sent += 1
            self.producer.flush()
            time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))

    def run_in_background(self, stable_seconds: float, then_shift: bool, phase_seconds: float) -> None:
        def body() -> None:
            self.send_for(stable_seconds)
            self.shifted = then_shift
            self.send_for(phase_seconds)

        self._thread = threading.Thread(target=body, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)
        self.producer.close(5)


def _config(tmp_path: Path, bootstrap: str, predictions: str, feedback: str) -> Config:
    return Config.model_validate({
        "database": {"url": f"sqlite:///{tmp_path}/modelmon.db"},
        "kafka": {
            "bootstrap_servers": bootstrap, "predictions_topic": predictions, "feedback_topic": feedback,
            "group_id": f"e2e-{uuid.uuid4().hex[:8]}",
            "consumer": {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
        },
        "ingest": {"batch_max_age": "200ms"},
        "server": {"host": "127.0.0.1", "port": 0},
        "rollups": {"fine": "1s", "coarse": "1m"},  # 10 s windows
        "models": {"fraud": {
            "task": "binary", "positive_class": 1, "classes": ["0", "1"],
            "windows": ["10s"], "interval": "1s", "min_samples": 50, "min_labels": 50,
            "slos": [{"name": "latency-300ms", "kind": "latency", "threshold": "300ms", "objective": 0.99}],
        }},
    })


def _metric_line(url: str, prefix: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:
        return any(line.startswith(prefix) for line in resp.read().decode().splitlines())


def _run(tmp_path: Path, kafka_bootstrap: str, kafka_topics, shift: bool) -> dict:
    predictions, feedback = kafka_topics("e2e-pred"), kafka_topics("e2e-fb")
    cfg = _config(tmp_path, kafka_bootstrap, predictions, feedback)
    engine = make_engine(cfg.database.url)
    upgrade(engine)
    with engine.begin() as conn:
        store_baseline(conn, "fraud", "predictions", {"0": 0.9, "1": 0.1}, 10_000, "validation set")
    engine.dispose()

    stream = Stream(kafka_bootstrap, predictions)

    def warmup(runtime) -> None:
        # Start Prometheus only once predictions flow, so absent() alerts start from a live model.
        deadline = time.monotonic() + 60
        while not _metric_line(runtime.url + "/metrics", 'modelmon_class_shift_psi{baseline="research"'):
            assert time.monotonic() < deadline, "no class-shift value after 60 s of warm-up"
            stream.send_for(0.5)

    try:
        with promstack(cfg, tmp_path / "stack", for_scale=FOR_SCALE, warmup=warmup) as stack:
            stream.run_in_background(WARM_SECONDS, shift, PHASE_SECONDS)
            result: dict = {"stack_alerts": None}
            if shift:
                while stream.shift_started is None:
                    time.sleep(0.05)
                alert = stack.webhook.wait_for(
                    lambda a: a["labels"].get("alertname") == "ModelmonClassShift", timeout=60
                )
                result["alert"] = alert
                if alert is not None:
                    result["latency"] = alert["_received_monotonic"] - stream.shift_started
            else:
                time.sleep(WARM_SECONDS + PHASE_SECONDS - 3)
                # While events still flow (an empty window exports no value):
                result["psi"] = stack.prometheus.query('modelmon_class_shift_psi{model="fraud"}')
                result["slo"] = stack.prometheus.query('modelmon:slo_error_ratio:rate5m{model="fraud"}')
                time.sleep(3 + 10)  # the rest of the stream + the pipeline's own delay
            result["notifications"] = stack.webhook.alerts(status=None)
            result["prometheus_alerts"] = stack.prometheus.alerts()
            result["rule_errors"] = stack.prometheus.rule_health()
            return result
    finally:
        stream.close()


def test_class_shift_pages_through_prometheus_and_alertmanager(tmp_path: Path, kafka_bootstrap: str, kafka_topics) -> None:
    result = _run(tmp_path, kafka_bootstrap, kafka_topics, shift=True)
    assert result["rule_errors"] == []
    alert = result["alert"]
    assert alert is not None, f"no class-shift notification; Prometheus alerts: {result['prometheus_alerts']}"
    print(f"\nclass shift: first shifted event -> webhook notification in {result['latency']:.1f} s")
    assert alert["labels"]["model"] == "fraud"
    assert alert["labels"]["severity"] == "ticket"
    assert alert["_path"].endswith("/ticket")  # routed by severity
    assert alert["annotations"]["runbook_url"].endswith("#runbook-modelmonclassshift")
    names = {a["labels"]["alertname"] for a in result["notifications"]}
    assert names == {"ModelmonClassShift"}, names


def test_stable_stream_of_the_same_length_fires_nothing(tmp_path: Path, kafka_bootstrap: str, kafka_topics) -> None:
    result = _run(tmp_path, kafka_bootstrap, kafka_topics, shift=False)
    assert result["rule_errors"] == []
    # The quiet is not for lack of data: the shift and SLO series are there.
    assert {r["metric"]["baseline"] for r in result["psi"]} >= {"research"}
    assert result["slo"] and result["slo"][0]["value"] == 0
    assert result["notifications"] == []
    assert [a for a in result["prometheus_alerts"] if a["state"] == "firing"] == []
