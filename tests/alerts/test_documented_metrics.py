"""The metric names the documentation gives are the ones a live /metrics exports (issue 13).

A Runtime (monitor scheduler + exporter) runs on a store holding everything every
monitor family needs, with ingest's metrics registered on its registry too; its
/metrics is scraped. Every `modelmon_*` name in the documentation sources
(docs/readme/*.md: README.md and docs/*.md are assembled from them, and
tests/test_readme.py keeps them in step) must be an exported family or a
recording rule, and no exported family may carry the exporter's placeholder HELP.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelmon.alerts.rules import generate
from modelmon.config import Config
from modelmon.contract import Feedback, Prediction, score_summary
from modelmon.ingest.metrics import IngestMetrics, latency_buckets_for
from modelmon.monitors.baselines import store_baseline
from modelmon.runtime import Runtime
from modelmon.store.features import new_reference, set_reference
from modelmon.store.rollups import Specs
from modelmon.store.writes import DeadLetter, write_batch

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs" / "readme").glob("*.md"))
NAME = re.compile(r"\bmodelmon_[a-z0-9_]*[a-z0-9]\b")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")
PLACEHOLDER = re.compile(r"^modelmon monitor result [a-z0-9_]+\.$")
# Families that only appear under conditions a short test cannot (and need not) produce:
# the exporter's overload valves, and ingest's redelivery outcomes (registered lazily).
CONDITIONAL = {"modelmon_metrics_models_omitted", "modelmon_metrics_results_omitted",
               "modelmon_metrics_series_omitted"}


def _config(tmp_path: Path) -> Config:
    return Config.model_validate({
        "database": {"url": f"sqlite:///{tmp_path}/modelmon.db"},
        "server": {"host": "127.0.0.1", "port": 0},
        "rollups": {"fine": "1s", "coarse": "1m"},
        # The feature families (their worker process) on a short window, soon after the data lands.
        "features": {"windows": ["10m"], "interval": "2s"},
        "models": {"fraud": {
            "task": "binary", "positive_class": 1, "classes": ["0", "1"], "windows": ["10m"], "interval": "1s",
            "min_samples": 50, "min_labels": 50, "compare": "auto", "slices": ["region"],
            "slos": [
                {"name": "latency-300ms", "kind": "latency", "threshold": "300ms", "objective": 0.99,
                 "period": "1h"},
                {"name": "errors", "kind": "error_rate", "objective": 0.999, "period": "1h"},
            ],
        }},
    })


def _events(now: float) -> tuple[list, list]:
    preds, labels = [], []
    for i in range(800):
        version = "v1" if i % 2 else "v2"
        ts = now - 500 + i * 0.6
        truth = str(i % 2)
        predicted = truth if i % 10 else str(1 - int(truth))
        p = 0.8 if predicted == "1" else 0.2
        scores = {"0": round(1 - p, 3), "1": p}
        score_pred, score_max, entropy = score_summary(scores, predicted)
        rid = f"r{i}"
        preds.append((Prediction(
            request_id=rid, model="fraud", model_version=version, ts=ts, prediction=predicted, scores=scores,
            score_pred=score_pred, score_max=score_max, entropy=entropy, latency_seconds=0.01 + (i % 7) * 0.1,
            status="error" if i % 25 == 0 else "ok", slices={"region": "eu" if i % 3 else "us"},
            features={"amount": float(i % 50), "merchant": f"m{i % 4}", "channel": "web"},
            schema_version=1, digest=f"p{rid}",
        ), None))
        labels.append((Feedback(request_id=rid, model="fraud", label=truth, ts=ts + 1.0, schema_version=1,
                                digest=f"f{rid}"), None))
    return preds, labels


def _scrape(url: str) -> dict[str, str]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {f.name: f.documentation for f in text_string_to_metric_families(text)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Family name (as the parser names it: no _total) -> HELP, from a live /metrics."""
    tmp_path = tmp_path_factory.mktemp("documented")
    cfg = _config(tmp_path)
    with Runtime(cfg, with_ingest=False) as rt:
        now = time.time()
        preds, labels = _events(now)
        with rt.engine.begin() as conn:
            write_batch(conn, preds, labels, [DeadLetter("invalid_json", "x", b"{", 1, "kafka", None)],
                        source="http", specs=Specs(cfg))
            store_baseline(conn, "fraud", "predictions", {"0": 0.5, "1": 0.5}, 1000, "test")
            store_baseline(conn, "fraud", "labels", {"0": 0.5, "1": 0.5}, 1000, "test")
            # A reference for the feature families ("channel" is on the window's side only).
            set_reference(conn, "fraud", new_reference(
                "fraud", {"amount": [float(i % 40) for i in range(200)], "merchant": [f"m{i % 3}" for i in range(200)]},
                "test", 200))
        ingest = IngestMetrics(rt.registry, latency_buckets_for(cfg))
        ingest.observe_predictions([p for p, _ in preds], "preds")
        ingest.observe_feedback([f for f, _ in labels], "feedback")
        ingest.observe_dead_letters(["invalid_json"])
        ingest.observe_outcome_counts({"prediction": 1}, {"feedback": 1})
        ingest.batch_size.observe(10)
        ingest.batch_duration.observe(0.1)
        ingest.set_lag("preds", 0, 3)
        ingest.watch_pending(lambda: 0.0)
        ingest.db_errors.inc()
        # version_worse, not only version_verdict: a compare run that started before the
        # events were committed exports a verdict of "none" and no version_worse yet.
        needed = ("modelmon_version_verdict", "modelmon_version_worse", "modelmon_fairness_disparate_impact_ratio",
                  "modelmon_label_shift_psi", "modelmon_slo_burn_rate", "modelmon_estimated_accuracy_ratio",
                  "modelmon_feature_drift_share_ratio", "modelmon_feature_missing_ratio")
        deadline = time.monotonic() + 90
        while True:
            families = _scrape(rt.url)
            if all(n in families for n in needed):
                return families
            assert time.monotonic() < deadline, sorted(set(needed) - set(families))
            time.sleep(1)


def _recorded() -> set[str]:
    cfg = Config.model_validate(_config(Path("/nonexistent")).model_dump())
    names = set()
    for text in generate(cfg).values():
        names |= set(re.findall(r"record: (\S+)", text))
    return names


def _documented() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in DOCS:
        for name in NAME.findall(path.read_text(encoding="utf-8")):
            out.setdefault(name, []).append(path.name)
    return out


def _family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def test_every_documented_metric_is_exported_or_recorded(exported: dict[str, str]) -> None:
    recorded = _recorded()
    assert recorded, "no recording rules generated"
    missing = {
        name: files for name, files in _documented().items()
        if name not in exported and _family(name) not in exported and name not in recorded
        and name not in CONDITIONAL
    }
    assert not missing, f"documented but neither exported nor recorded: {missing}"


def test_no_exported_family_has_a_placeholder_help(exported: dict[str, str]) -> None:
    assert len(exported) > 60
    placeholder = sorted(n for n, doc in exported.items() if PLACEHOLDER.match(doc) or not doc.strip())
    assert not placeholder, f"{len(placeholder)} families without a real HELP: {placeholder}"
