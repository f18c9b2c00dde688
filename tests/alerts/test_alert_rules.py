"""Generated Prometheus rules: golden files, promtool check/test, coverage of every alert."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modelmon.alerts.rules import (
    ALERTS,
    DEFAULT_RUNBOOK_BASE,
    HEADER,
    RuleOptions,
    generate,
    prom_duration,
    runbook_url,
    stale_files,
    write_rules,
)
from modelmon.cli import main as cli_main
from modelmon.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "rules"
UNIT_TESTS = ROOT / "alerts" / "tests"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool not installed: run `make setup` (Debian package prometheus)")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _repo_config():
    return load_config(ROOT / "modelmon.yaml", environ={})


def test_committed_rules_match_a_fresh_generation() -> None:
    """Golden test: alerts/rules/ is exactly what the repository's modelmon.yaml generates."""
    files = generate(_repo_config())
    committed = sorted(p.name for p in RULES.glob("*.yml"))
    assert committed == sorted(files), "run `modelmon rules generate` and commit alerts/rules/"
    for name, text in files.items():
        assert (RULES / name).read_text(encoding="utf-8") == text, f"{name} is out of date"
    assert stale_files(_repo_config(), RULES) == []


def test_generation_is_deterministic_and_headed() -> None:
    a, b = generate(_repo_config()), generate(_repo_config())
    assert a == b
    for text in a.values():
        assert text.startswith(HEADER)
        assert "Do not edit" in text


def test_promtool_check_rules_accepts_every_file() -> None:
    result = _promtool("check", "rules", *sorted(str(p) for p in RULES.glob("*.yml")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    tests = sorted(str(p.name) for p in UNIT_TESTS.glob("*.test.yml"))
    result = _promtool("test", "rules", *tests, cwd=UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests)


def _unit_cases() -> dict[str, dict[str, int]]:
    cases: dict[str, dict[str, int]] = {}
    suites = [yaml.safe_load(p.read_text())["tests"] for p in UNIT_TESTS.glob("*.test.yml")]
    for suite in (*suites, *(u["tests"] for u in SCHEDULE_UNIT_TESTS.values())):
        for test in suite:
            for check in test.get("alert_rule_test", []):
                kind = "firing" if check.get("exp_alerts") else "quiet"
                c = cases.setdefault(check["alertname"], {"firing": 0, "quiet": 0})
                c[kind] += 1
    return cases


def test_every_alert_has_a_firing_and_a_not_firing_unit_test() -> None:
    cases = _unit_cases()
    generated = set()
    for text in generate(_repo_config()).values():
        for group in yaml.safe_load(text)["groups"]:
            generated |= {r["alert"] for r in group["rules"] if "alert" in r}
    assert generated == set(ALERTS)
    for alert in ALERTS:
        assert cases.get(alert, {}).get("firing", 0) >= 1, f"{alert}: no firing case"
        assert cases.get(alert, {}).get("quiet", 0) >= 1, f"{alert}: no not-firing case"


def test_every_alert_carries_severity_summary_description_runbook() -> None:
    for text in generate(_repo_config(), RuleOptions(runbook_base="https://example.org/r.md")).values():
        for group in yaml.safe_load(text)["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    assert rule["record"].startswith("modelmon:")
                    continue
                assert rule["labels"]["severity"] in ("page", "ticket")
                ann = rule["annotations"]
                assert ann["summary"] and ann["description"]
                assert ann["runbook_url"] == f"https://example.org/r.md#runbook-{rule['alert'].lower()}"


def test_runbook_sections_exist_for_every_alert() -> None:
    doc = (ROOT / "docs" / "readme" / "alerts.md").read_text(encoding="utf-8")
    for alert in ALERTS:
        assert re.search(rf"^#+ Runbook: {alert}\s*$", doc, re.M), f"no runbook section for {alert}"
        # GitHub's anchor of "Runbook: X" is runbook-x; the generator must point there.
        assert runbook_url(alert).endswith(f"#runbook-{alert.lower()}")


def test_for_scale_shortens_every_for(tmp_path: Path) -> None:
    files = generate(_repo_config(), RuleOptions(for_scale=0.01))
    durations = set()
    for text in files.values():
        for group in yaml.safe_load(text)["groups"]:
            durations |= {r["for"] for r in group["rules"] if "for" in r}
    assert durations and durations <= {"1200ms", "6s", "3s", "9s", "1800ms", "600ms"}
    assert prom_duration(0.5) == "500ms" and prom_duration(5400) == "90m" and prom_duration(86400) == "1d"


def test_write_rules_removes_only_generated_files_no_longer_produced(tmp_path: Path) -> None:
    (tmp_path / "model-old.yml").write_text(HEADER + "groups: []\n")
    (tmp_path / "mine.yml").write_text("groups: []\n")
    write_rules(_repo_config(), tmp_path)
    names = sorted(p.name for p in tmp_path.glob("*.yml"))
    assert names == ["discovered-models.yml", "mine.yml", "model-fraud.yml", "service.yml"]


def test_cli_generate_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(ROOT / "modelmon.yaml")
    assert cli_main(["-c", cfg, "rules", "generate", "--out", str(tmp_path)]) == 0
    assert cli_main(["-c", cfg, "rules", "generate", "--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "service.yml").write_text("edited\n")
    assert cli_main(["-c", cfg, "rules", "generate", "--out", str(tmp_path), "--check"]) == 1
    assert "service.yml" in capsys.readouterr().out


FULL_CONFIG = """
defaults:
  windows: [5m, 1h, 1d]
  min_samples: 50
models:
  scorer:
    task: multiclass
    min_labels: 30
    baseline_accuracy: 0.9
    mature_coverage: 0.6
    thresholds: {accuracy_min: 0.7, accuracy_drop: 0.1, estimated_accuracy_drop: 0.05, psi: 0.25}
  "fraud.v2":
    task: binary
    positive_class: 1
"""


def _ann(rule: dict) -> dict:
    return rule["annotations"]


def test_absolute_accuracy_thresholds_with_promtool(tmp_path: Path) -> None:
    """accuracy_min and baseline_accuracy branches (the repo's config uses the rolling one)."""
    (tmp_path / "modelmon.yaml").write_text(FULL_CONFIG)
    cfg = load_config(tmp_path / "modelmon.yaml", environ={})
    rules_dir = tmp_path / "rules"
    write_rules(cfg, rules_dir)
    assert _promtool("check", "rules", *sorted(str(p) for p in rules_dir.glob("*.yml"))).returncode == 0
    # A dotted model name must be an exact, escaped regex in the catch-all selector.
    assert 'model!~"fraud\\\\.v2|scorer"' in (rules_dir / "discovered-models.yml").read_text()

    text = (rules_dir / "model-scorer.yml").read_text()
    alerts = {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r}
    acc, est = alerts["ModelmonAccuracyDrop"], alerts["ModelmonEstimatedAccuracyDrop"]

    def series(name: str, window: str, values: str, **extra: str) -> dict:
        labels = {"model": "scorer", "model_version": "*", "window": window, **extra}
        body = ",".join(f'{k}="{v}"' for k, v in labels.items())
        return {"series": f"{name}{{{body}}}", "values": values}

    def samples(metric: str, window: str, n: int, monitor: str) -> dict:
        return series("modelmon_monitor_samples", window, f"{n}x40", metric=metric, monitor=monitor, status="ok")

    firing_acc = {"severity": "page", "model": "scorer", "model_version": "*"}
    unit = {
        "rule_files": ["rules/model-scorer.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {   # 0.75 is above the 0.7 floor but below baseline 0.9 - 0.1 = 0.8
                "interval": "1m",
                "input_series": [
                    series("modelmon_accuracy_ratio", "1h", "0.85x5 0.75x30"),
                    samples("accuracy_ratio", "1h", 30, "accuracy"),
                    series("modelmon_label_coverage_ratio", "1h", "0.7x40"),
                    # floor breach, but only 29 labels: quiet
                    series("modelmon_accuracy_ratio", "1d", "0.5x40"),
                    samples("accuracy_ratio", "1d", 29, "accuracy"),
                    series("modelmon_label_coverage_ratio", "1d", "0.9x40"),
                    # floor breach with enough labels but coverage 0.55 < 0.6: still maturing, quiet
                    series("modelmon_accuracy_ratio", "5m", "0.5x40"),
                    samples("accuracy_ratio", "5m", 300, "accuracy"),
                    series("modelmon_label_coverage_ratio", "5m", "0.55x40"),
                    # estimated accuracy 0.84 < 0.9 - 0.05 in 1h; 0.86 in 5m is fine
                    series("modelmon_estimated_accuracy_ratio", "1h", "0.84x40"),
                    samples("estimated_accuracy_ratio", "1h", 60, "proxies"),
                    series("modelmon_estimated_accuracy_ratio", "5m", "0.86x40"),
                    samples("estimated_accuracy_ratio", "5m", 60, "proxies"),
                ],
                "alert_rule_test": [
                    {"eval_time": "9m", "alertname": "ModelmonAccuracyDrop", "exp_alerts": []},
                    {"eval_time": "12m", "alertname": "ModelmonAccuracyDrop", "exp_alerts": [
                        {"exp_labels": {**firing_acc, "window": "1h"}, "exp_annotations": {
                            "summary": "Labelled accuracy of scorer dropped (1h window)",
                            "description": "Accuracy of scorer (version *) on labelled predictions over the 1h "
                            "window is 0.75, below floor 0.7 or baseline 0.9 - 0.1 (at least 30 labels, "
                            "label coverage at least 0.6).",
                            "runbook_url": _ann(acc)["runbook_url"]}}]},
                    {"eval_time": "14m", "alertname": "ModelmonEstimatedAccuracyDrop", "exp_alerts": []},
                    {"eval_time": "16m", "alertname": "ModelmonEstimatedAccuracyDrop", "exp_alerts": [
                        {"exp_labels": {"severity": "ticket", "model": "scorer", "model_version": "*",
                                        "window": "1h"}, "exp_annotations": {
                            "summary": "Estimated accuracy of scorer dropped (1h window)",
                            "description": "Accuracy of scorer (version *) estimated from its confidence scores "
                            "over the 1h window is 0.84, below baseline 0.9 - 0.05 (at least 50 predictions). "
                            "Labels may not have arrived yet: this is an early warning.",
                            "runbook_url": _ann(est)["runbook_url"]}}]},
                ],
            },
            {   # the floor alone: 0.65 < 0.7
                "interval": "1m",
                "input_series": [
                    series("modelmon_accuracy_ratio", "1d", "0.65x40"),
                    samples("accuracy_ratio", "1d", 1000, "accuracy"),
                    series("modelmon_label_coverage_ratio", "1d", "0.95x40"),
                ],
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "ModelmonAccuracyDrop", "exp_alerts": []},
                    {"eval_time": "6m", "alertname": "ModelmonAccuracyDrop", "exp_alerts": [
                        {"exp_labels": {**firing_acc, "window": "1d"}, "exp_annotations": {
                            "summary": "Labelled accuracy of scorer dropped (1d window)",
                            "description": "Accuracy of scorer (version *) on labelled predictions over the 1d "
                            "window is 0.65, below floor 0.7 or baseline 0.9 - 0.1 (at least 30 labels, "
                            "label coverage at least 0.6).",
                            "runbook_url": _ann(acc)["runbook_url"]}}]},
                ],
            },
        ],
    }
    (tmp_path / "scorer.test.yml").write_text(yaml.safe_dump(unit, sort_keys=False))
    result = _promtool("test", "rules", "scorer.test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_consumer_lag_threshold_is_configurable_and_validated(tmp_path: Path) -> None:
    assert _repo_config().model("*").thresholds.consumer_lag_messages == 10_000
    path = tmp_path / "modelmon.yaml"
    path.write_text("defaults:\n  thresholds: {consumer_lag_messages: 250000}\n")
    service = yaml.safe_load(generate(load_config(path, environ={}))["service.yml"])
    lag = next(r for r in service["groups"][0]["rules"] if r.get("alert") == "ModelmonConsumerLagHigh")
    assert lag["expr"] == (
        "sum by (topic) (max by (topic, partition) (modelmon_consumer_lag_messages)) > 250000\n"
    )
    assert lag["for"] == "10m" and lag["labels"] == {"severity": "ticket"}
    for bad in ("0", "-5", "lots"):
        path.write_text(f"defaults:\n  thresholds: {{consumer_lag_messages: {bad}}}\n")
        with pytest.raises(ConfigError, match="consumer_lag_messages"):
            load_config(path, environ={})


def test_shift_alerts_require_effect_size_and_significance_and_samples() -> None:
    """Class and label shift: (PSI or JS) AND p-value AND samples, one stable series per key."""
    text = generate(_repo_config())["model-fraud.yml"]
    alerts = {r["alert"]: r for g in yaml.safe_load(text)["groups"] for r in g["rules"] if "alert" in r}
    key = "on(model, model_version, window, baseline)"
    for name, prefix in (("ModelmonClassShift", "class"), ("ModelmonLabelShift", "label")):
        expr = alerts[name]["expr"]
        effect, significance = expr.split(f"\nand {key}\n(\n")
        assert f"modelmon_{prefix}_shift_psi" in effect and f"modelmon_{prefix}_shift_js_distance" in effect
        assert f"or {key}" in effect and "pvalue" not in effect
        assert f'metric="{prefix}_shift_psi"}}) >= 100' in effect
        assert f"modelmon_{prefix}_shift_chi2_pvalue" in significance
        assert f'metric="{prefix}_shift_chi2_pvalue"}}) >= 100' in significance
        assert "statistic" not in alerts[name]["labels"] and "label_replace" not in expr


def test_candidate_worse_holds_the_verdict_and_never_reads_inconclusive(tmp_path: Path) -> None:
    """`version_worse == 1` on the all-versions row, held max(10m, 3 x interval), scaled by for_scale."""
    path = tmp_path / "modelmon.yaml"
    path.write_text("models:\n  slow: {interval: 5m}\n  fast: {interval: 30s}\n")
    cfg = load_config(path, environ={})

    def rule(files: dict[str, str], name: str) -> dict:
        groups = yaml.safe_load(files[name])["groups"]
        return next(r for g in groups for r in g["rules"] if r.get("alert") == "ModelmonCandidateWorse")

    files = generate(cfg)
    slow, fast = rule(files, "model-slow.yml"), rule(files, "model-fast.yml")
    assert slow["expr"] == (
        'max without (instance, job, pod) (modelmon_version_worse{model="slow", model_version="*"}) == 1\n'
    )
    # == 1: a 0 (not worse) never matches; inconclusive exports no value at all.
    assert (slow["for"], fast["for"]) == ("15m", "10m")
    assert slow["labels"] == {"severity": "page"}
    assert "held for 15m" in slow["annotations"]["description"]
    assert rule(files, "discovered-models.yml")["expr"].startswith('max without (instance, job, pod) (modelmon_version_worse{model!~"fast|slow"')
    scaled = rule(generate(cfg, RuleOptions(for_scale=0.01)), "model-slow.yml")
    assert scaled["for"] == "9s" and "held for 9s" in scaled["annotations"]["description"]


# -- scheduler and ingest stalls (issue 14): promtool unit tests of the repository's rules --------

RUNBOOK = DEFAULT_RUNBOOK_BASE + "#runbook-"
SCHEDULE_UNIT_TESTS = {
    "service": {
        "rule_files": [str(RULES / "service.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {   # shift: 400 s behind on one of two instances (> 300 s) for 3m pages a ticket;
                # accuracy 200 s behind, and a 400 s spike shorter than 3m, stay quiet.
                "interval": "1m",
                "input_series": [
                    {"series": 'modelmon_monitor_schedule_delay_seconds{monitor="shift",instance="a:9464"}',
                     "values": "0x5 400x20"},
                    {"series": 'modelmon_monitor_schedule_delay_seconds{monitor="shift",instance="b:9464"}',
                     "values": "0x25"},
                    {"series": 'modelmon_monitor_schedule_delay_seconds{monitor="accuracy",instance="a:9464"}',
                     "values": "200x25"},
                    {"series": 'modelmon_monitor_schedule_delay_seconds{monitor="fairness",instance="a:9464"}',
                     "values": "0x5 400 400 0x18"},
                ],
                "alert_rule_test": [
                    {"eval_time": "7m", "alertname": "ModelmonMonitorBehind", "exp_alerts": []},
                    {"eval_time": "10m", "alertname": "ModelmonMonitorBehind", "exp_alerts": [
                        {"exp_labels": {"severity": "ticket", "monitor": "shift"}, "exp_annotations": {
                            "summary": "Monitor shift is 6m 40s behind schedule",
                            "description": "A job of monitor shift has been due for 6m 40s without starting "
                            "(threshold 5m, for 3m): the scheduler cannot keep up with the models' intervals, "
                            "or a job of this monitor hangs. Its values on dashboards and in other alerts "
                            "are older than their interval.",
                            "runbook_url": RUNBOOK + "modelmonmonitorbehind"}}]},
                ],
            },
            {   # the oldest uncommitted batch ages past 300 s: pages after 1m; 200 s never does
                "interval": "1m",
                "input_series": [
                    {"series": 'modelmon_ingest_batch_pending_seconds{instance="a:9464"}',
                     "values": "0x5 0+60x20"},
                    {"series": 'modelmon_ingest_batch_pending_seconds{instance="b:9464"}', "values": "200x25"},
                ],
                "alert_rule_test": [
                    {"eval_time": "11m", "alertname": "ModelmonIngestStalled", "exp_alerts": []},
                    {"eval_time": "13m", "alertname": "ModelmonIngestStalled", "exp_alerts": [
                        {"exp_labels": {"severity": "page"}, "exp_annotations": {
                            "summary": "modelmon ingest cannot commit a batch for 7m 0s",
                            "description": "The modelmon ingest writer has held a batch it cannot commit for "
                            "7m 0s (threshold 5m): the store refuses or times out its writes. Nothing new "
                            "reaches the monitors, and the consumer lag grows until it is fixed.",
                            "runbook_url": RUNBOOK + "modelmoningeststalled"}}]},
                ],
            },
            {   # below both thresholds all along: quiet
                "interval": "1m",
                "input_series": [
                    {"series": 'modelmon_ingest_batch_pending_seconds{instance="a:9464"}', "values": "299x30"},
                    {"series": 'modelmon_monitor_schedule_delay_seconds{monitor="shift"}', "values": "299x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "25m", "alertname": "ModelmonIngestStalled", "exp_alerts": []},
                    {"eval_time": "25m", "alertname": "ModelmonMonitorBehind", "exp_alerts": []},
                ],
            },
        ],
    },
    "fraud": {
        "rule_files": [str(RULES / "model-fraud.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {   # a job that never succeeded is exported as 0: stale after 5m, and says "never"
                "interval": "1m",
                "input_series": [
                    {"series": 'modelmon_monitor_last_success_timestamp_seconds{model="fraud",monitor="proxies"}',
                     "values": "0x30"},
                ],
                "alert_rule_test": [
                    {"eval_time": "10m", "alertname": "ModelmonMonitorStale", "exp_alerts": []},
                    {"eval_time": "12m", "alertname": "ModelmonMonitorStale", "exp_alerts": [
                        {"exp_labels": {"severity": "ticket", "model": "fraud", "monitor": "proxies"},
                         "exp_annotations": {
                            "summary": "Monitor proxies of fraud is stale",
                            "description": "Monitor proxies for model fraud has never succeeded (runs every 1m; "
                            "stale after 5m). Its values on dashboards and in other alerts are out of date.",
                            "runbook_url": RUNBOOK + "modelmonmonitorstale"}}]},
                ],
            },
        ],
    },
    "discovered": {
        "rule_files": [str(RULES / "discovered-models.yml"), str(RULES / "service.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {   # retention runs every 10m, here each run ending 2 minutes into its slot: 12
                # minutes without a success is normal for it (stale after 30m), while a
                # discovered model's job is stale after 5m
                "interval": "1m",
                "input_series": [
                    {"series": 'modelmon_monitor_last_success_timestamp_seconds{model="*",monitor="retention"}',
                     "values": " ".join(f"{720 * k}+0x11" for k in range(6))},
                    {"series": 'modelmon_monitor_last_success_timestamp_seconds{model="other",monitor="shift"}',
                     "values": "0+0x9 600+0x50"},
                ],
                "alert_rule_test": [
                    {"eval_time": "47m", "alertname": "ModelmonMonitorStale", "exp_alerts": [
                        {"exp_labels": {"severity": "ticket", "model": "other", "monitor": "shift"},
                         "exp_annotations": {
                            "summary": "Monitor shift of other is stale",
                            "description": "Monitor shift for model other last succeeded 37m 0s ago (runs "
                            "every 1m; stale after 5m). Its values on dashboards and in other alerts are "
                            "out of date.",
                            "runbook_url": RUNBOOK + "modelmonmonitorstale"}}]},
                ],
            },
        ],
    },
}


@pytest.mark.parametrize("suite", sorted(SCHEDULE_UNIT_TESTS))
def test_schedule_ingest_and_never_succeeded_alerts_with_promtool(tmp_path: Path, suite: str) -> None:
    """ModelmonMonitorBehind, ModelmonIngestStalled and a never-succeeded ModelmonMonitorStale."""
    path = tmp_path / f"{suite}.test.yml"
    path.write_text(yaml.safe_dump(SCHEDULE_UNIT_TESTS[suite], sort_keys=False))
    result = _promtool("test", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schedule_delay_and_stall_thresholds_come_from_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "modelmon.yaml"
    path.write_text("defaults:\n  thresholds: {schedule_delay: 90s}\ningest: {stall_after: 2m}\n")
    service = yaml.safe_load(generate(load_config(path, environ={}))["service.yml"])
    rules = {r["alert"]: r for r in service["groups"][0]["rules"]}
    assert rules["ModelmonMonitorBehind"]["expr"] == (
        "max by (monitor) (modelmon_monitor_schedule_delay_seconds) > 90.0\n")
    assert rules["ModelmonIngestStalled"]["expr"] == "max(modelmon_ingest_batch_pending_seconds) > 120.0\n"
    assert (rules["ModelmonMonitorBehind"]["for"], rules["ModelmonIngestStalled"]["for"]) == ("3m", "1m")
    assert rules["ModelmonMonitorBehind"]["labels"] == {"severity": "ticket"}
    assert rules["ModelmonIngestStalled"]["labels"] == {"severity": "page"}


# -- latency SLOs count every error as bad (issue 13): promtool on the generated rules ------------

def _near(expr: str, value: float) -> str:
    return f"abs({expr} - {value!r}) < bool 1e-9"


FAST_FAILURES = {
    "evaluation_interval": "1m",
    "tests": [
        {   # 600 fast successes and 120 fast failures a minute: 1/6 bad, a 16.7x burn of a 1% budget
            "interval": "1m",
            "input_series": [
                {"series": 'modelmon_prediction_latency_seconds_bucket{model="fraud",le="0.3"}',
                 "values": "0+600x30"},
                {"series": 'modelmon_prediction_latency_seconds_count{model="fraud"}', "values": "0+600x30"},
                {"series": 'modelmon_predictions_total{model="fraud",model_version="v1",status="ok"}',
                 "values": "0+600x30"},
                {"series": 'modelmon_predictions_total{model="fraud",model_version="v1",status="error"}',
                 "values": "0+120x30"},
            ],
            "promql_expr_test": [
                {"expr": _near('modelmon:slo_error_ratio:rate5m{slo="latency-300ms"}', 120 / 720),
                 "eval_time": "20m", "exp_samples": [{"labels": '{model="fraud",slo="latency-300ms"}', "value": 1}]},
                {"expr": _near('modelmon:slo_requests:rate5m{slo="latency-300ms"}', 720 / 60),
                 "eval_time": "20m", "exp_samples": [{"labels": '{model="fraud",slo="latency-300ms"}', "value": 1}]},
                {"expr": 'ALERTS{alertname="ModelmonSLOFastBurn",slo="latency-300ms",alertstate="firing"}',
                 "eval_time": "20m", "exp_samples": [{"labels": (
                     '{__name__="ALERTS",alertname="ModelmonSLOFastBurn",alertstate="firing",model="fraud",'
                     'severity="page",slo="latency-300ms"}'), "value": 1}]},
            ],
        },
        {   # every request fails before it measures a latency: no histogram at all, all bad
            "interval": "1m",
            "input_series": [
                {"series": 'modelmon_predictions_total{model="fraud",model_version="v1",status="error"}',
                 "values": "0+60x30"},
            ],
            "promql_expr_test": [
                {"expr": 'modelmon:slo_error_ratio:rate30m{slo="latency-300ms"}', "eval_time": "20m",
                 "exp_samples": [{"labels": 'modelmon:slo_error_ratio:rate30m{model="fraud",slo="latency-300ms"}',
                                  "value": 1}]},
            ],
        },
    ],
}


def test_latency_slo_rules_count_fast_failures_as_bad(tmp_path: Path) -> None:
    (tmp_path / "model-fraud.yml").write_text(generate(_repo_config())["model-fraud.yml"])
    unit = {"rule_files": ["model-fraud.yml"], **FAST_FAILURES}
    (tmp_path / "slo.test.yml").write_text(yaml.safe_dump(unit, sort_keys=False))
    result = _promtool("test", "rules", "slo.test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# -- fairness gaps alert on their simultaneous interval (issue 13): promtool -----------------------

def _fair(metric: str, attribute: str, window: str, values: str) -> dict:
    return {"series": f'modelmon_fairness_{metric}{{model="fraud",model_version="*",window="{window}",'
                      f'attribute="{attribute}"}}', "values": values}


def _fair_gap(metric: str, attribute: str, window: str, point: str, lower: str, upper: str) -> list[dict]:
    return [_fair(metric, attribute, window, point), _fair(f"{metric}_lower", attribute, window, lower),
            _fair(f"{metric}_upper", attribute, window, upper)]


FAIRNESS_GAP = {
    "evaluation_interval": "1m",
    "tests": [
        {   # equal opportunity 0.21 on a few positives, interval [0.04, 0.53]: not evidence, quiet;
            # demographic parity 0.2 with lower bound 0.12 > 0.1 from minute 5: fires after 15m;
            # disparate impact 0.6 with upper bound 0.85 >= 0.8 (small slices): quiet
            "interval": "1m",
            "input_series": [
                *_fair_gap("equal_opportunity_difference", "race", "1h", "0.21x40", "0.04x40", "0.53x40"),
                *_fair_gap("demographic_parity_difference", "sex", "1d", "0.05x4 0.2x35",
                           "0.01x4 0.12x35", "0.1x4 0.29x35"),
                *_fair_gap("disparate_impact_ratio", "race", "1h", "0.6x40", "0.3x40", "0.85x40"),
            ],
            "alert_rule_test": [
                {"eval_time": "15m", "alertname": "ModelmonFairnessGap", "exp_alerts": []},
                {"eval_time": "21m", "alertname": "ModelmonFairnessGap", "exp_alerts": [
                    {"exp_labels": {"severity": "ticket", "model": "fraud", "model_version": "*",
                                    "window": "1d", "attribute": "sex", "statistic": "demographic_parity"},
                     "exp_annotations": {
                        "summary": "Fairness gap for fraud across sex",
                        "description": "The demographic_parity of fraud (version *) across all slices of sex "
                        "over the 1d window is 0.2 (simultaneous 95% interval [0.12, 0.29]): the whole "
                        "interval is beyond the threshold (disparate_impact < 0.8, demographic_parity > 0.1, "
                        "equal_opportunity > 0.1)."}}]},
            ],
        },
        {   # four-fifths rule: ratio 0.6 whose upper bound 0.75 < 0.8 fires; equal opportunity
            # 0.15 with lower bound 0.1 exactly (not above) stays quiet
            "interval": "1m",
            "input_series": [
                *_fair_gap("disparate_impact_ratio", "sex", "1h", "0.6x30", "0.5x30", "0.75x30"),
                *_fair_gap("equal_opportunity_difference", "sex", "1h", "0.15x30", "0.1x30", "0.2x30"),
            ],
            "alert_rule_test": [
                {"eval_time": "14m", "alertname": "ModelmonFairnessGap", "exp_alerts": []},
                {"eval_time": "16m", "alertname": "ModelmonFairnessGap", "exp_alerts": [
                    {"exp_labels": {"severity": "ticket", "model": "fraud", "model_version": "*",
                                    "window": "1h", "attribute": "sex", "statistic": "disparate_impact"},
                     "exp_annotations": {
                        "summary": "Fairness gap for fraud across sex",
                        "description": "The disparate_impact of fraud (version *) across all slices of sex "
                        "over the 1h window is 0.6 (simultaneous 95% interval [0.5, 0.75]): the whole "
                        "interval is beyond the threshold (disparate_impact < 0.8, demographic_parity > 0.1, "
                        "equal_opportunity > 0.1)."}}]},
            ],
        },
    ],
}


def test_fairness_gap_fires_on_the_interval_not_the_point(tmp_path: Path) -> None:
    """ModelmonFairnessGap reads the gap's interval bound: a large point gap on small slices
    whose interval still reaches the threshold is quiet; an interval wholly beyond it fires."""
    text = generate(_repo_config())["model-fraud.yml"]
    (tmp_path / "model-fraud.yml").write_text(text)
    rule = next(r for g in yaml.safe_load(text)["groups"] for r in g["rules"]
                if r.get("alert") == "ModelmonFairnessGap")
    assert "modelmon_monitor_samples" not in rule["expr"]  # the interval is the sample-size guard
    for test in FAIRNESS_GAP["tests"]:
        for check in test["alert_rule_test"]:
            for alert in check["exp_alerts"]:
                alert["exp_annotations"]["runbook_url"] = rule["annotations"]["runbook_url"]
    unit = {"rule_files": ["model-fraud.yml"], **FAIRNESS_GAP}
    (tmp_path / "fairness.test.yml").write_text(yaml.safe_dump(unit, sort_keys=False))
    result = _promtool("test", "rules", "fairness.test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
