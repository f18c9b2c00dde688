"""Dashboard panels read each monitor result once, however many processes export it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modelmon.dashboards.generate import build_all
from modelmon.dashboards.queries import _PER_PROCESS, once_per_result, panel_targets

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SELECTOR = re.compile(r"(max without \(instance, job, pod\) \()?\b(modelmon_[a-z0-9_]+)\{[^{}]*\}(\s*\[)?")


def test_every_result_selector_of_every_panel_is_read_once() -> None:
    seen = 0
    for dashboard in build_all().values():
        for _, t in panel_targets(dashboard):
            for wrapped, name, ranged in SELECTOR.findall(t["expr"]):
                if ranged or _PER_PROCESS.match(name):
                    assert not wrapped, t["expr"]
                else:
                    seen += 1
                    assert wrapped, f"{name} read raw in {t['expr']!r}"
    assert seen > 20


def test_wrapping_leaves_per_process_series_and_ranges_alone() -> None:
    assert once_per_result('sum by (model) (rate(modelmon_predictions_total{model="m"}[5m]))') == (
        'sum by (model) (rate(modelmon_predictions_total{model="m"}[5m]))')
    assert once_per_result('max_over_time(modelmon_accuracy_ratio{model="m"}[1h])') == (
        'max_over_time(modelmon_accuracy_ratio{model="m"}[1h])')
    assert once_per_result('time() - modelmon_monitor_last_success_timestamp_seconds{model="m"}') == (
        'time() - max without (instance, job, pod) '
        '(modelmon_monitor_last_success_timestamp_seconds{model="m"})')


def test_two_processes_give_one_series_per_result_in_prometheus(tmp_path: Path) -> None:
    """promtool evaluates a wrapped panel query over the same result from two processes."""
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool not installed: run `make setup` (Debian package prometheus)")
    series = 'modelmon_accuracy_ratio{{model="m",model_version="*",window="1h",instance="{i}",pod="{p}"}}'
    values = {"10.0.0.1:9464": "0.9x10", "10.0.0.2:9464": "0.9x10"}
    expr = once_per_result('modelmon_accuracy_ratio{model="m", window="1h"}')
    (tmp_path / "empty.yml").write_text("groups: []\n")
    unit = {"rule_files": ["empty.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": series.format(i=i, p=f"pod-{n}"), "values": v}
                         for n, (i, v) in enumerate(values.items())],
        "promql_expr_test": [{"expr": expr, "eval_time": "5m", "exp_samples": [
            {"labels": '{model="m",model_version="*",window="1h"}', "value": 0.9}]}],
    }]}
    (tmp_path / "panel.test.yml").write_text(yaml.safe_dump(unit, sort_keys=False))
    result = subprocess.run([PROMTOOL, "test", "rules", "panel.test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
