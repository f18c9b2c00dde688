"""ModelmonFeatureDrift, ModelmonDataQuality and ModelmonFeaturesAbsent: generated from each model's thresholds, the
features' interval and the API base URL, and evaluated by promtool at their boundaries.

The repository's own rules have their promtool unit tests in
alerts/tests/model-fraud-features.test.yml (run by test_alert_rules.py); these tests
generate rules from a configuration with other thresholds, so a threshold that does not
reach the rules, or a comparison on the wrong side of it, fails here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelmon.alerts.rules import RuleOptions, generate, prom_duration, write_rules
from modelmon.alerts.rules_features import FEATURE_ALERTS, hold_seconds
from modelmon.config import Config, load_config

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
API = "https://modelmon.example.com/api/"
CONFIG = f"""
alerts: {{api_base_url: "{API}"}}
features: {{interval: 8m}}
defaults: {{min_samples: 200}}
models:
  scorer:
    min_samples: 30
    thresholds:
      feature_drift_share: 0.25
      feature_missing_increase: 0.2
      feature_unseen_share: 0.1
      feature_out_of_range_share: 0.15
      feature_type_change_share: 0.02
"""


def _config(tmp_path: Path, text: str = CONFIG) -> Config:
    path = tmp_path / "modelmon.yaml"
    path.write_text(text)
    return load_config(path, environ={})


def _alerts(text: str) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r}


def test_rules_carry_the_models_thresholds_hold_and_report_link(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    files = generate(cfg)
    scorer, other = _alerts(files["model-scorer.yml"]), _alerts(files["discovered-models.yml"])
    th, default = cfg.model("scorer").thresholds, cfg.model("*").thresholds
    hold = max(600.0, 2 * cfg.features.interval)
    assert hold_seconds(cfg) == hold == 960.0
    for alerts, thresholds, minimum, selector in (
        (scorer, th, 30, 'model="scorer", model_version="*"'),
        (other, default, 200, 'model!~"scorer", model_version="*"'),
    ):
        drift, quality, absent = (alerts[name] for name in FEATURE_ALERTS)
        assert f"modelmon_feature_drift_share_ratio{{{selector}}}" in drift["expr"]
        assert f"modelmon_feature_missing_ratio{{{selector}}}" in quality["expr"]
        assert f">= {thresholds.feature_drift_share!r}\n" in drift["expr"]
        assert re.search(re.escape('metric="feature_drift_share_ratio"}') + rf"\)? >= {minimum}\n", drift["expr"])
        for metric, value in (("feature_unseen_category_ratio", thresholds.feature_unseen_share),
                              ("feature_out_of_range_ratio", thresholds.feature_out_of_range_share),
                              ("feature_type_change_ratio", thresholds.feature_type_change_share)):
            value_part = re.escape(f"modelmon_{metric}{{{selector}}}") + r"\)? > " + re.escape(repr(value))
            assert re.search(value_part + "\n", quality["expr"]), metric
            assert re.search(re.escape(f'metric="{metric}"}}') + rf"\)? >= {minimum},", quality["expr"])
        assert f") > {thresholds.feature_missing_increase!r}\n" in quality["expr"]
        assert f"(modelmon_features_present_ratio{{{selector}}}) == 0\n" in absent["expr"]
        assert re.search(re.escape('metric="features_present_ratio"}') + rf"\)? >= {minimum}$", absent["expr"])
        for rule in (drift, quality, absent):
            assert rule["for"] == prom_duration(hold) and rule["labels"] == {"severity": "ticket"}
        assert drift["annotations"]["report_url"] == (
            "https://modelmon.example.com/api/v1/report?model={{ $labels.model | urlquery }}"
            "&window={{ $labels.window | urlquery }}")
        assert "report_url" not in quality["annotations"]
    scaled = _alerts(generate(cfg, RuleOptions(for_scale=0.01))["model-scorer.yml"])
    assert scaled["ModelmonFeatureDrift"]["for"] == prom_duration(hold * 0.01)
    assert f"held for {prom_duration(hold * 0.01)}" in scaled["ModelmonFeatureDrift"]["annotations"]["description"]


def test_no_feature_rules_when_the_feature_families_are_off(tmp_path: Path) -> None:
    cfg = _config(tmp_path, CONFIG.replace("features: {interval: 8m}", "features: {enabled: false}"))
    assert not cfg.features.enabled
    for text in generate(cfg).values():
        assert not set(FEATURE_ALERTS) & set(_alerts(text)), "feature alerts generated while disabled"


def _series(name: str, window: str, values: str, **labels: str) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in {"model": "scorer", "model_version": "*", "window": window,
                                                  **labels}.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def _samples(metric: str, window: str, n: int, monitor: str, **labels: str) -> dict[str, str]:
    """The exporter's sample count of a result (status ok: the value is exported)."""
    return _series("modelmon_monitor_samples", window, f"{n}x60", metric=metric, monitor=monitor,
                   status="ok", **labels)


def test_thresholds_are_reached_inclusively_for_drift_and_strictly_for_quality(tmp_path: Path) -> None:
    """At the configured thresholds: the drift share fires at exactly its threshold (evidently's
    dataset drift is share >= threshold), a data-quality share only above its own; one sample
    fewer than min_samples keeps either quiet. The expected values come from the configuration."""
    cfg = _config(tmp_path)
    th, minimum = cfg.model("scorer").thresholds, cfg.model("scorer").min_samples
    rules_dir = tmp_path / "rules"
    write_rules(cfg, rules_dir)
    hold_minutes = int(hold_seconds(cfg) // 60)
    settle = hold_minutes + 3  # evaluation time well past the hold
    share, increase = th.feature_drift_share, th.feature_missing_increase
    reference_missing = 0.05
    below = th.feature_unseen_share - 0.01
    series = [
        # drift, 1h: exactly at the threshold on min_samples sampled predictions: fires
        _series("modelmon_feature_drift_share_ratio", "1h", f"{share}x60"),
        _samples("feature_drift_share_ratio", "1h", minimum, "feature_drift"),
        _series("modelmon_feature_drift_detected", "1h", "1x60", feature="amount", stattest="ks"),
        _series("modelmon_feature_drift_detected", "1h", "0x60", feature="age", stattest="ks"),
        # drift, 1d: just below the threshold: quiet
        _series("modelmon_feature_drift_share_ratio", "1d", f"{share - 0.01}x60"),
        _samples("feature_drift_share_ratio", "1d", 10 * minimum, "feature_drift"),
        # drift, 6h: far above, one sample short: quiet
        _series("modelmon_feature_drift_share_ratio", "6h", "1x60"),
        _samples("feature_drift_share_ratio", "6h", minimum - 1, "feature_drift"),
        # quality, 1h: missing increase exactly at the threshold (not above): quiet; unseen above: fires
        _series("modelmon_feature_missing_ratio", "1h", f"{reference_missing + increase}x60", feature="city"),
        _series("modelmon_feature_reference_missing_ratio", "1h", f"{reference_missing}x60", feature="city"),
        _samples("feature_missing_ratio", "1h", minimum, "data_quality", feature="city"),
        _series("modelmon_feature_unseen_category_ratio", "1h", f"{th.feature_unseen_share + 0.01}x60",
                feature="city"),
        _samples("feature_unseen_category_ratio", "1h", minimum, "data_quality", feature="city"),
        # quality, 1d: missing increase above the threshold: fires; an unseen share below: quiet
        _series("modelmon_feature_missing_ratio", "1d", f"{reference_missing + increase + 0.01}x60",
                feature="income"),
        _series("modelmon_feature_reference_missing_ratio", "1d", f"{reference_missing}x60", feature="income"),
        _samples("feature_missing_ratio", "1d", minimum, "data_quality", feature="income"),
        _series("modelmon_feature_unseen_category_ratio", "1d", f"{below}x60", feature="income"),
        _samples("feature_unseen_category_ratio", "1d", minimum, "data_quality", feature="income"),
        # quality, 1d: out of range and type change above their thresholds, one sample short: quiet
        _series("modelmon_feature_out_of_range_ratio", "1d", f"{th.feature_out_of_range_share + 0.1}x60",
                feature="age"),
        _samples("feature_out_of_range_ratio", "1d", minimum - 1, "data_quality", feature="age"),
        _series("modelmon_feature_type_change_ratio", "1d", f"{th.feature_type_change_share + 0.1}x60",
                feature="age"),
        _samples("feature_type_change_ratio", "1d", minimum - 1, "data_quality", feature="age"),
        # quality, 6h: out of range and type change just above their thresholds: both fire
        _series("modelmon_feature_out_of_range_ratio", "6h", f"{th.feature_out_of_range_share + 0.001}x60",
                feature="age"),
        _samples("feature_out_of_range_ratio", "6h", minimum, "data_quality", feature="age"),
        _series("modelmon_feature_type_change_ratio", "6h", f"{th.feature_type_change_share + 0.001}x60",
                feature="age"),
        _samples("feature_type_change_ratio", "6h", minimum, "data_quality", feature="age"),
        # features absent, 1h: no prediction carries features, on min_samples predictions: fires
        _series("modelmon_features_present_ratio", "1h", "0x60"),
        _samples("features_present_ratio", "1h", minimum, "data_quality"),
        # features absent, 1d: the same on one prediction fewer: quiet
        _series("modelmon_features_present_ratio", "1d", "0x60"),
        _samples("features_present_ratio", "1d", minimum - 1, "data_quality"),
    ]
    def firing(alert: str, at: str, *labels: dict[str, str]) -> dict[str, Any]:
        """`ALERTS` series of `alert` firing at `at`: which alerts fire, by their labels (the
        annotations of both alerts are checked by alerts/tests/model-fraud-features.test.yml)."""
        base = {"__name__": "ALERTS", "alertname": alert, "alertstate": "firing", "model": "scorer",
                "model_version": "*", "severity": "ticket"}
        samples = [{"labels": "{" + ",".join(f'{k}="{v}"' for k, v in sorted({**base, **extra}.items())) + "}",
                    "value": 1} for extra in labels]
        return {"expr": f'ALERTS{{alertname="{alert}", alertstate="firing"}}', "eval_time": at,
                "exp_samples": samples}

    early = f"{hold_minutes - 1}m"
    unit = {
        "rule_files": ["rules/model-scorer.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [
                firing("ModelmonFeatureDrift", early),
                firing("ModelmonFeatureDrift", f"{settle}m", {"window": "1h"}),
                firing("ModelmonDataQuality", early),
                firing("ModelmonDataQuality", f"{settle}m",
                       {"window": "1h", "feature": "city", "check": "unseen_category"},
                       {"window": "1d", "feature": "income", "check": "missing_increase"},
                       {"window": "6h", "feature": "age", "check": "out_of_range"},
                       {"window": "6h", "feature": "age", "check": "type_change"}),
                firing("ModelmonFeaturesAbsent", early),
                firing("ModelmonFeaturesAbsent", f"{settle}m", {"window": "1h"}),
            ],
        }],
    }
    (tmp_path / "features.test.yml").write_text(yaml.safe_dump(unit, sort_keys=False))
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool not installed: run `make setup` (Debian package prometheus)")
    result = subprocess.run([PROMTOOL, "test", "rules", "features.test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
