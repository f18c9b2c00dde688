"""Input-feature incident end to end: store -> feature families (their worker process) -> /metrics
-> a real Prometheus with the generated rules -> Alertmanager -> webhook.

Two models get the same stored reference (2,000 rows, `set_reference`) of five features:
`amount`, `age`, `income` (numbers) and `merchant`, `device` (categories). Predictions are
written straight into the store through the ingest write path (`write_batch`):

* `incident`: `amount` shifted by 0.5 reference standard deviations, a merchant never seen
  in the reference in 20% of the rows, and `income` sent as null in every row;
* `control`: a stable period, every feature drawn from the reference's distributions;
* `silent`: the same predictions with no `features` at all (a service that stopped logging
  them), which leaves both alerts above without a sample.

A `modelmon monitor` runtime (scheduler + HTTP, no Kafka) runs the `feature_drift` and
`data_quality` families every 2 s in their worker process; Prometheus evaluates the generated
rules (`for:` x 0.005: the 10m hold becomes 3 s). The incident must raise ModelmonFeatureDrift
and ModelmonDataQuality (missing `income`, unseen `merchant`); the control neither, although its
values are there; `silent` must raise ModelmonFeaturesAbsent, and only it. The exported data-quality numbers are checked against pandas on the rows
written, and the drift share against the exported per-feature verdicts.

`thresholds.feature_drift_share` is 0.2 here: `income` is null in the incident window, so it is
present on the reference's side only and not compared, which leaves four compared features;
with evidently's default of 0.5 two of them would have to drift, while the point of the alert
is that one badly shifted input (1 of 4 = 0.25) is already worth a ticket for a model fed
by a handful of features.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from promstack import promstack

from modelmon.config import Config
from modelmon.contract import parse_prediction
from modelmon.store.features import new_reference, set_reference
from modelmon.store.rollups import Specs
from modelmon.store.writes import write_batch

pytestmark = pytest.mark.integration

FOR_SCALE = 0.005  # the feature alerts' `for: 10m` becomes 3s
REFERENCE_ROWS = 2000  # > 1000: evidently picks distance tests (Wasserstein, Jensen-Shannon)
WINDOW_ROWS = 1500
DRIFT_SHARE = 0.2
MIN_SAMPLES = 200
MERCHANTS = (["m1", "m2", "m3", "m4"], [0.4, 0.3, 0.2, 0.1])
DEVICES = (["ios", "android", "web"], [0.5, 0.3, 0.2])
AMOUNT_MEAN, AMOUNT_SD = 100.0, 20.0
API = "http://modelmon.example.com:9464"


def _config(tmp_path: Path) -> Config:
    model = {"task": "binary", "positive_class": 1, "classes": ["0", "1"], "windows": ["10m"],
             "interval": "2s", "min_samples": MIN_SAMPLES, "thresholds": {"feature_drift_share": DRIFT_SHARE}}
    return Config.model_validate({
        "database": {"url": f"sqlite:///{tmp_path}/modelmon.db"},
        "server": {"host": "127.0.0.1", "port": 0},
        "rollups": {"fine": "1s", "coarse": "1m"},
        "alerts": {"api_base_url": API},
        "features": {"windows": ["10m"], "interval": "2s"},
        "models": {"control": model, "incident": model, "silent": model},
    })


def _features(rng: np.random.Generator, n: int, incident: bool) -> pd.DataFrame:
    """Rows of the five features; the incident's three changes when `incident`."""
    amount = rng.normal(AMOUNT_MEAN, AMOUNT_SD, n)
    merchant = rng.choice(MERCHANTS[0], n, p=MERCHANTS[1]).astype(object)
    income: Any = rng.normal(50_000.0, 10_000.0, n)
    if incident:
        amount = amount + 0.5 * AMOUNT_SD
        merchant[rng.random(n) < 0.2] = "m_new"
        income = [None] * n
    return pd.DataFrame({
        "amount": amount, "age": rng.normal(40.0, 10.0, n), "income": income, "merchant": merchant,
        "device": rng.choice(DEVICES[0], n, p=DEVICES[1]),
    })


def _json_value(v: Any) -> Any:
    if v is None or isinstance(v, str):
        return v
    return float(v)


def _predictions(model: str, frame: pd.DataFrame, start: float, end: float, features: bool = True) -> list:
    """The frame's rows as validated prediction logs spread over [start, end) (without
    their features unless `features`)."""
    out = []
    for i, row in enumerate(frame.itertuples(index=False)):
        positive = i % 5 == 0
        p = 0.8 if positive else 0.2
        event = {
            "request_id": f"{model}-{i}", "model": model, "model_version": "v1",
            "timestamp": start + (end - start) * i / len(frame), "prediction": "1" if positive else "0",
            "scores": {"0": round(1 - p, 3), "1": p}, "latency_ms": 20,
        }
        if features:
            event["features"] = {k: _json_value(v) for k, v in row._asdict().items()}
        out.append((parse_prediction(event), None))
    return out


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        return resp.read().decode()


def _values(stack: Any, expr: str) -> dict[tuple[str, ...], float]:
    """An instant query's values keyed by (model, feature) or (model,)."""
    out = {}
    for r in stack.prometheus.query(expr):
        m = r["metric"]
        out[(m["model"], m["feature"]) if "feature" in m else (m["model"],)] = r["value"]
    return out


def _expected_quality(reference: pd.DataFrame, window: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The data-quality shares by pandas, on the same rows (the window is smaller than
    `features.sample_rows`, so the sample is all of it)."""
    present = window["merchant"].dropna()
    amount = window["amount"].dropna()
    lo, hi = reference["amount"].min(), reference["amount"].max()
    return {
        "missing_income": float(window["income"].isna().mean()),
        "reference_missing_income": float(reference["income"].isna().mean()),
        "unseen_merchant": float((~present.isin(set(reference["merchant"]))).mean()),
        "out_of_range_amount": float(((amount < lo) | (amount > hi)).mean()),
    }


def _scenario(tmp_path: Path) -> dict[str, Any]:
    cfg = _config(tmp_path)
    rng = np.random.default_rng(11)
    reference = _features(rng, REFERENCE_ROWS, incident=False)
    windows = {"control": _features(rng, WINDOW_ROWS, incident=False),
               "incident": _features(rng, WINDOW_ROWS, incident=True),
               "silent": _features(rng, WINDOW_ROWS, incident=False)}

    def warmup(runtime: Any) -> None:
        now = time.time()
        with runtime.engine.begin() as conn:
            for model, frame in windows.items():
                columns = {k: [_json_value(v) for v in reference[k]] for k in reference.columns}
                set_reference(conn, model, new_reference(model, columns, "test reference", REFERENCE_ROWS))
                preds = _predictions(model, frame, now - 300, now - 5, features=model != "silent")
                write_batch(conn, preds, [], [], source="http", specs=Specs(cfg))
        # The worker process imports evidently on its first job: give it time.
        deadline = time.monotonic() + 180
        while not all(f'modelmon_feature_drift_share_ratio{{model="{m}"' in _metrics(runtime.url)
                      for m in ("control", "incident")):
            assert time.monotonic() < deadline, "no feature drift share on /metrics after 180 s"
            time.sleep(1)

    with promstack(cfg, tmp_path / "stack", with_ingest=False, for_scale=FOR_SCALE, warmup=warmup) as stack:
        started = time.monotonic()
        wanted = {("incident", "ModelmonFeatureDrift", ""), ("incident", "ModelmonDataQuality", "income"),
                  ("incident", "ModelmonDataQuality", "merchant"), ("silent", "ModelmonFeaturesAbsent", "")}

        def arrived() -> set[tuple[str, str, str]]:
            return {(a["labels"].get("model", ""), a["labels"]["alertname"], a["labels"].get("feature", ""))
                    for a in stack.webhook.alerts()}

        deadline = time.monotonic() + 90
        while not wanted <= arrived() and time.monotonic() < deadline:
            time.sleep(0.5)
        seconds = time.monotonic() - started
        # The control's series have been evaluated as long as the incident's; wait past one
        # more hold (3 s) and Alertmanager's group wait before reading the quiet.
        time.sleep(600 * FOR_SCALE + 5)
        detected = stack.prometheus.query("modelmon_feature_drift_detected")
        return {
            "seconds": seconds, "reference": reference, "windows": windows,
            "notifications": stack.webhook.alerts(status=None),
            "prometheus_alerts": stack.prometheus.alerts(),
            "rule_errors": stack.prometheus.rule_health(),
            "share": _values(stack, "modelmon_feature_drift_share_ratio"),
            "detected": {(r["metric"]["model"], r["metric"]["feature"]): r["value"] for r in detected},
            "stattest": {(r["metric"]["model"], r["metric"]["feature"]): r["metric"]["stattest"] for r in detected},
            "compared": _values(stack, "modelmon_feature_drift_compared_features"),
            "reference_only": _values(stack, "modelmon_feature_reference_only_features"),
            "missing": _values(stack, "modelmon_feature_missing_ratio"),
            "reference_missing": _values(stack, "modelmon_feature_reference_missing_ratio"),
            "unseen": _values(stack, "modelmon_feature_unseen_category_ratio"),
            "out_of_range": _values(stack, "modelmon_feature_out_of_range_ratio"),
            "present": _values(stack, "modelmon_features_present_ratio"),
        }


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _scenario(tmp_path_factory.mktemp("features-e2e"))


def _alerts_of(result: dict[str, Any], model: str) -> list[dict[str, Any]]:
    return [a for a in result["notifications"] if a["labels"].get("model") == model]


def test_incident_raises_feature_drift_and_data_quality(scenario: dict[str, Any]) -> None:
    assert scenario["rule_errors"] == []
    print(f"\nfeature incident: Prometheus start -> both alerts at the webhook in {scenario['seconds']:.1f} s")
    firing = {(a["labels"]["alertname"], a["labels"].get("feature", ""), a["labels"].get("check", "")): a
              for a in _alerts_of(scenario, "incident") if a["status"] == "firing"}
    assert ("ModelmonFeatureDrift", "", "") in firing, scenario["prometheus_alerts"]
    assert ("ModelmonDataQuality", "income", "missing_increase") in firing, sorted(firing)
    assert ("ModelmonDataQuality", "merchant", "unseen_category") in firing, sorted(firing)

    # The drift share is the exported per-feature verdicts' share, and crosses the threshold.
    verdicts = {f: v for (m, f), v in scenario["detected"].items() if m == "incident"}
    drifted = sorted(f for f, v in verdicts.items() if v == 1)
    assert "amount" in drifted and "merchant" in drifted, verdicts
    assert "income" not in verdicts  # null in the window: reference-only, not compared
    assert scenario["compared"][("incident",)] == len(verdicts)
    assert scenario["reference_only"][("incident",)] == 1
    share = scenario["share"][("incident",)]
    print(f"incident: drifted {drifted} of {sorted(verdicts)} (share {share:.2f}); control share "
          f"{scenario['share'][('control',)]:.2f}; tests {sorted(set(scenario['stattest'].values()))}")
    assert share == pytest.approx(len(drifted) / len(verdicts), abs=1e-12)
    assert share >= DRIFT_SHARE

    drift = firing[("ModelmonFeatureDrift", "", "")]
    assert drift["labels"]["severity"] == "ticket" and drift["_path"].endswith("/ticket")
    assert drift["labels"]["window"] == "10m"
    assert drift["annotations"]["report_url"] == f"{API}/v1/report?model=incident&window=10m"
    assert drift["annotations"]["runbook_url"].endswith("#runbook-modelmonfeaturedrift")
    listed = drift["annotations"]["description"].split("Drifted: ", 1)[1]
    assert listed.rstrip(".").split(", ") == [f"{f} ({scenario['stattest'][('incident', f)]})" for f in drifted]
    quality = firing[("ModelmonDataQuality", "income", "missing_increase")]
    assert "is missing in 100% of the sampled predictions against 0% in the reference" in (
        quality["annotations"]["description"])


def test_stable_control_period_fires_neither(scenario: dict[str, Any]) -> None:
    assert scenario["rule_errors"] == []
    names = {a["labels"]["alertname"] for a in _alerts_of(scenario, "control")}
    assert not names & {"ModelmonFeatureDrift", "ModelmonDataQuality"}, names
    pending = [a for a in scenario["prometheus_alerts"] if a["labels"].get("model") == "control"
               and a["labels"]["alertname"] in ("ModelmonFeatureDrift", "ModelmonDataQuality")]
    assert pending == []
    # The quiet is a measurement, not missing data.
    verdicts = {f: v for (m, f), v in scenario["detected"].items() if m == "control"}
    assert set(verdicts) == {"amount", "age", "income", "merchant", "device"}
    assert scenario["share"][("control",)] == pytest.approx(sum(verdicts.values()) / len(verdicts), abs=1e-12)
    assert scenario["share"][("control",)] < DRIFT_SHARE


@pytest.mark.parametrize("model", ["control", "incident"])
def test_exported_data_quality_equals_pandas(scenario: dict[str, Any], model: str) -> None:
    expected = _expected_quality(scenario["reference"], scenario["windows"][model])
    assert scenario["missing"][(model, "income")] == pytest.approx(expected["missing_income"], abs=1e-12)
    assert scenario["reference_missing"][(model, "income")] == pytest.approx(
        expected["reference_missing_income"], abs=1e-12)
    assert scenario["unseen"][(model, "merchant")] == pytest.approx(expected["unseen_merchant"], abs=1e-12)
    assert scenario["out_of_range"][(model, "amount")] == pytest.approx(expected["out_of_range_amount"], abs=1e-12)


def test_predictions_without_features_raise_features_absent_only(scenario: dict[str, Any]) -> None:
    """`silent` has a reference and 1,500 predictions, none with features: ModelmonFeaturesAbsent
    fires for it alone; its drift and quality alerts have no sample, the others carry features."""
    assert scenario["rule_errors"] == []
    firing = {a["labels"]["alertname"] for a in _alerts_of(scenario, "silent") if a["status"] == "firing"}
    assert firing == {"ModelmonFeaturesAbsent"}, firing
    absent = next(a for a in _alerts_of(scenario, "silent") if a["labels"]["alertname"] == "ModelmonFeaturesAbsent")
    assert absent["labels"]["window"] == "10m" and absent["labels"]["severity"] == "ticket"
    assert absent["annotations"]["runbook_url"].endswith("#runbook-modelmonfeaturesabsent")
    others = {a["labels"].get("model") for a in scenario["notifications"]
              if a["labels"]["alertname"] == "ModelmonFeaturesAbsent"}
    assert others == {"silent"}
    # The exported share, against the rows written: none for silent, all for the others.
    for model, frame in scenario["windows"].items():
        carried = 0 if model == "silent" else len(frame)
        assert scenario["present"][(model,)] == pytest.approx(carried / len(frame), abs=1e-12)
