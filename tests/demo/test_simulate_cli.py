"""`modelmon simulate` (the compose traffic profile) against the test broker, and the live view."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from rich.console import Console

from modelmon.cli import main
from modelmon.config import Config
from modelmon.contract import ContractError, decode, parse_feedback, parse_prediction
from modelmon.demo.live import ModelView, Snapshot, _threshold_alerts, render, status_line


def _consume(bootstrap: str, topic: str) -> list[bytes]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=3000,
                             auto_offset_reset="earliest")
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        return [m.value for m in consumer]
    finally:
        consumer.close()


def test_simulate_sends_valid_traffic(tmp_path: Path, kafka_bootstrap: str, kafka_topics, capsys) -> None:
    preds, fb = kafka_topics("sim-pred", 2), kafka_topics("sim-fb", 2)
    config = tmp_path / "modelmon.yaml"
    config.write_text(yaml.safe_dump({"kafka": {"predictions_topic": preds, "feedback_topic": fb}}))
    rc = main(["-c", str(config), "simulate", "--bootstrap", kafka_bootstrap, "--rate", "30", "--duration", "4",
               "--label-delay", "0.5", "--seed", "5"])
    out = capsys.readouterr().out
    assert rc == 0, out
    sent = int(re.search(r"sent (\d+) predictions", out).group(1))
    raw = _consume(kafka_bootstrap, preds)
    good, bad = [], 0
    for value in raw:
        try:
            good.append(parse_prediction(decode(value, 1_000_000)))
        except ContractError:
            bad += 1
    assert len(good) == sent and 150 < sent < 330  # 2 models x 30/s x 4 s, Poisson
    assert {p.model for p in good} == {"fraud", "species"}
    labels = [parse_feedback(decode(v, 1_000_000)) for v in _consume(kafka_bootstrap, fb)]
    by_id = {p.request_id for p in good}
    assert labels and all(f.request_id in by_id for f in labels)
    assert f"{bad} malformed" in out


def _snapshot(psi: float, di: float, freshness: float) -> Snapshot:
    values = {"accuracy": (0.91, "ok"), "estimated": (None, "insufficient_data (n=12)"), "psi": (psi, "ok"),
              "p95": (0.123, "ok"), "burn": (0.5, "ok"), "di": (di, "ok"),
              "di_upper": (di + 0.1, "ok")}  # the interval's upper bound, what the view tests
    views = [ModelView("fraud", 12.0, freshness, values)]
    return Snapshot(0.0, 42.0, views, [], ["class_shift (species)"], 3, "thresholds", ["  10s  X started firing"])


def test_live_view_without_prometheus_shows_crossed_thresholds() -> None:
    cfg = Config.model_validate({"models": {"fraud": {"positive_class": 1}}})
    snap = _snapshot(psi=0.35, di=0.6, freshness=700.0)
    names = {a["alertname"] for a in _threshold_alerts(snap.models, cfg)}
    assert names == {"ClassShift", "FairnessGap", "NoRecentPredictions"}
    assert _threshold_alerts(_snapshot(0.05, 0.95, 1.0).models, cfg) == []
    snap.alerts = _threshold_alerts(snap.models, cfg)
    console = Console(width=160, record=True)
    console.print(render(snap))
    text = console.export_text()
    for expected in ("91.0%", "0.350", "123 ms", "few samples", "ClassShift", "class_shift (species)"):
        assert expected in text
    assert "alerts: ClassShift(fraud), FairnessGap(fraud), NoRecentPredictions(fraud)" in status_line(snap)


def test_live_view_shows_the_version_verdict() -> None:
    cfg = Config.model_validate({"models": {"fraud": {"positive_class": 1}}})
    snap = _snapshot(psi=0.05, di=0.95, freshness=1.0)
    view = snap.models[0]
    view.values.update({"version_diff": (-0.12, "ok"), "worse": (1.0, "ok")})
    view.verdict = "worse: v4 vs v3 (accuracy_lower)"
    alerts = _threshold_alerts(snap.models, cfg)
    assert [(a["alertname"], a["detail"]) for a in alerts] == [
        ("CandidateWorse", "worse: v4 vs v3 (accuracy_lower), accuracy -12.0 pts")]
    snap.alerts = alerts
    console = Console(width=160, record=True)
    console.print(render(snap))
    text = console.export_text()
    assert "-12.0 pts" in text and "fraud worse: v4 vs v3 (accuracy_lower)" in text
    assert "versions=worse: v4 vs v3" in status_line(snap)
    view.values["worse"] = (None, "insufficient_data (n=40)")  # inconclusive: nothing crossed
    assert _threshold_alerts(snap.models, cfg) == []
