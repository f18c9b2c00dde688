"""Every dashboard query returns data from a real Prometheus fed by the running service.

No Grafana can run here, so this is how we know the panels work: modelmon runs
(ingest + monitors + /metrics) against the test broker with simulated traffic
for two models (labels, slices, errors, malformed events); the alerts stack
(tests/promstack.py) has a real Prometheus scrape it; then every template
variable must resolve and every panel query (variables filled in) must return
at least one series. The model dashboard is checked twice: with the version
picker's default "*" (all versions together; regex-escaped the way Grafana
sends it) and with the canary version v4 picked. The simulated fraud model has
two versions (v3 80%, v4 20%), so the Versions row (traffic share, accuracy,
latency and the compare family's verdict and accuracy difference) has data.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from promstack import promstack

from modelmon.config import Config
from modelmon.contract import parse_prediction
from modelmon.dashboards.check import check_dashboard
from modelmon.dashboards.generate import build_all
from modelmon.demo.config import demo_settings
from modelmon.demo.simulator import FRAUD, SPECIES, KafkaSender, Simulator, run
from modelmon.monitors.baselines import store_baseline
from modelmon.store.engine import make_engine
from modelmon.store.features import new_reference, set_reference
from modelmon.store.migrate import upgrade
from modelmon.store.rollups import Specs
from modelmon.store.writes import write_batch

RATE = 40.0
PREFERRED = {"model": FRAUD, "attribute": "sex"}
CANARY = {**PREFERRED, "model_version": "v4"}
DEADLINE = 120.0


def _config(tmp_path: Path, bootstrap: str, predictions: str, feedback: str) -> Config:
    settings = demo_settings(f"sqlite:///{tmp_path}/modelmon.db", bootstrap, 0, RATE)
    settings["kafka"].update({"predictions_topic": predictions, "feedback_topic": feedback,
                              "group_id": f"dash-{predictions}"})
    settings["defaults"]["interval"] = "2s"
    settings["defaults"]["min_slice_samples"] = 50
    settings["features"] = {"interval": "10s"}
    return Config.model_validate(settings)


def _with_features(cfg: Config, n: int = 400) -> tuple[list, dict[str, list]]:
    """Predictions of the fraud model's v3 carrying features, 6 to 9 minutes old (inside the
    feature windows, outside the demo's monitor windows), and a reference for them: the
    simulator's events carry no features. `amount` is numeric, `merchant` categorical with a
    category the reference lacks, `channel` on the window's side only."""
    now = time.time()
    rows = []
    for i in range(n):
        positive = i % 10 == 0
        rows.append((parse_prediction({
            "request_id": f"features-{i}", "model": FRAUD, "model_version": "v3",
            "timestamp": now - 540 + 180 * i / n, "prediction": int(positive),
            "scores": {"0": 0.2 if positive else 0.8, "1": 0.8 if positive else 0.2},
            "features": {"amount": float(i % 60), "merchant": f"m{i % 5}", "channel": "web"},
        }), None))
    reference = {"amount": [float(i % 50) for i in range(500)], "merchant": [f"m{i % 4}" for i in range(500)]}
    return rows, reference


def test_every_panel_query_returns_data(tmp_path: Path, kafka_bootstrap: str, kafka_topics) -> None:
    predictions, feedback = kafka_topics("dash-pred", 3), kafka_topics("dash-fb", 3)
    cfg = _config(tmp_path, kafka_bootstrap, predictions, feedback)
    sim = Simulator(rate=RATE, seed=3, incidents=[], label_delay=2.0, label_delay_min=0.5,
                    malformed_share=0.01, error_share=0.01)
    engine = make_engine(cfg.database.url)
    upgrade(engine)
    with engine.begin() as conn:
        for model in (FRAUD, SPECIES):
            store_baseline(conn, model, "predictions", sim.baseline_shares(model), 200_000, "test")
        rows, reference = _with_features(cfg)
        write_batch(conn, rows, [], [], source="http", specs=Specs(cfg))
        set_reference(conn, FRAUD, new_reference(FRAUD, reference, "test", 500))
    engine.dispose()

    sender = KafkaSender(kafka_bootstrap, predictions, feedback)
    stop = threading.Event()
    traffic = threading.Thread(target=run, args=(sim, sender, DEADLINE, stop), daemon=True)
    dashboards = build_all()
    try:
        with promstack(cfg, tmp_path / "stack", warmup=lambda _rt: traffic.start()) as stack:
            url = stack.prometheus.url
            deadline = time.monotonic() + DEADLINE - 10
            while True:
                reports = {n: check_dashboard(url, n, d, PREFERRED) for n, d in dashboards.items()}
                reports["model-detail v4"] = check_dashboard(url, "model-detail v4", dashboards["model-detail"],
                                                             CANARY)
                if all(r.ok for r in reports.values()) or time.monotonic() > deadline:
                    break
                time.sleep(3)
            # The check can fail: a query for a series that does not exist is reported.
            bogus = {"panels": [{"title": "bogus", "targets": [{"expr": 'modelmon_no_such_metric{model="$model"}'}]}],
                     "templating": {"list": dashboards["model-detail"]["templating"]["list"]}}
            missing = check_dashboard(url, "bogus", bogus, PREFERRED)
            assert missing.empty and not missing.ok
    finally:
        stop.set()
        traffic.join(30)
        sender.close()

    problems = []
    for name, r in reports.items():
        problems += [f"{name}: variable ${v} resolved to nothing" for v, vals in r.variables.items() if not vals]
        problems += [f"{name}: {line}" for line in r.empty + r.errors]
    assert not problems, "\n".join(problems)
    assert reports["model-detail"].chosen["model"] == FRAUD
    assert reports["model-detail"].chosen["model_version"] == "*"  # the picker's default, listed first
    assert set(reports["model-detail"].variables["model_version"]) == {"*", "v3", "v4"}
    assert reports["model-detail v4"].chosen["model_version"] == "v4"
    assert reports["fairness"].chosen["attribute"] == "sex"
    checked = {**dashboards, "model-detail v4": dashboards["model-detail"]}
    assert sum(r.checked for r in reports.values()) == sum(
        len([t for p in d["panels"] for t in p.get("targets", [])]) for d in checked.values())
    print({n: f"{r.checked} queries, variables {r.chosen}" for n, r in reports.items()})


@pytest.fixture(autouse=True)
def _quiet_kafka_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")
