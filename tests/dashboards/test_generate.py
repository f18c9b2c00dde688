"""The generated dashboards: reproducible, well-formed, and every query is valid PromQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modelmon.cli import main
from modelmon.dashboards import grafana
from modelmon.dashboards.generate import DASHBOARDS, JSON_DIR, PROVISIONING_DIR, build_all, render
from modelmon.dashboards.queries import panel_targets, regex_variables, substitute, variable_queries

EXAMPLE_VARS = {"model": "fraud", "model_version": "*", "window": "5m", "attribute": "sex"}


def test_committed_json_is_what_the_code_generates(tmp_path: Path) -> None:
    assert main(["dashboards", "generate", "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.glob("*.json"))
    committed = sorted(p.name for p in JSON_DIR.glob("*.json"))
    assert written == committed == sorted(f"{n}.json" for n in DASHBOARDS)
    for name in written:
        assert (tmp_path / name).read_text() == (JSON_DIR / name).read_text(), (
            f"dashboards/json/{name} is stale: run `modelmon dashboards generate`")
    assert main(["dashboards", "generate", "--check"]) == 0


def test_check_flags_a_stale_file(tmp_path: Path) -> None:
    main(["dashboards", "generate", "--out", str(tmp_path)])
    path = tmp_path / "fairness.json"
    path.write_text(path.read_text().replace("Fairness", "Fairnes"))
    assert main(["dashboards", "generate", "--check", "--out", str(tmp_path)]) == 1


def test_generation_is_deterministic() -> None:
    assert {n: render(d) for n, d in build_all().items()} == {n: render(d) for n, d in build_all().items()}
    for text in (render(d) for d in build_all().values()):
        assert json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n" == text


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_structure(name: str) -> None:
    dash = build_all()[name]
    assert dash["uid"].startswith("modelmon-") and len(dash["uid"]) <= 40
    assert dash["id"] is None and dash["schemaVersion"] == grafana.SCHEMA_VERSION
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == grafana.DS
        for t in panel.get("targets", []):
            assert t["datasource"] == grafana.DS and t["expr"]
    # No two panels overlap.
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names[0] == "datasource"
    used = set(re.findall(r"\$\{?(\w+)", json.dumps(dash["panels"]) + json.dumps(dash["templating"])))
    builtin = {"__rate_interval", "__interval", "__range", "datasource"}
    assert used - builtin <= set(names), f"undefined variables: {used - builtin - set(names)}"


def test_dashboard_uids_are_unique_and_stable() -> None:
    uids = {n: d["uid"] for n, d in build_all().items()}
    assert uids == {"fairness": "modelmon-fairness", "fleet-overview": "modelmon-fleet",
                    "model-detail": "modelmon-model"}


def test_model_detail_has_the_variables_and_panels_the_issue_asks_for() -> None:
    dash = build_all()["model-detail"]
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource", "model", "model_version", "window"]
    exprs = " ".join(t["expr"] for _, t in panel_targets(dash))
    for metric in ("modelmon_class_share_ratio", "modelmon_class_shift_psi", "modelmon_class_shift_js_distance",
                   "modelmon_accuracy_lower_ratio", "modelmon_label_coverage_ratio",
                   "modelmon_estimated_accuracy_ratio", "modelmon_prediction_latency_seconds_bucket",
                   "modelmon_slo_error_budget_remaining_ratio", "modelmon_slo_burn_rate",
                   "modelmon_ingest_dead_letters_total", "modelmon_consumer_lag_messages"):
        assert metric in exprs
    assert any(p["type"] == "heatmap" for p in dash["panels"])


def test_model_detail_versions_row_and_picker() -> None:
    """The Versions row (issue 12) and a version picker that every monitor-result panel honours."""
    dash = build_all()["model-detail"]
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    assert rows[1] == "Versions ($window window)"
    start = next(i for i, p in enumerate(dash["panels"]) if p["title"] == rows[1])
    end = next(i for i, p in enumerate(dash["panels"]) if p["title"] == rows[2])
    versions = {p["title"]: p for p in dash["panels"][start + 1:end]}
    exprs = {t: " ".join(x["expr"] for x in p["targets"]) for t, p in versions.items()}
    assert "modelmon_requests_per_second" in exprs["Traffic share per version"]
    assert 'model_version!="*"' in exprs["Traffic share per version"]
    assert "modelmon_accuracy_ratio" in exprs["Accuracy and estimated accuracy per version"]
    assert "modelmon_estimated_accuracy_ratio" in exprs["Accuracy and estimated accuracy per version"]
    assert 'quantile="0.95"' in exprs["Latency p95 per version"]
    diff = exprs["Accuracy difference, candidate - baseline (95% interval)"]
    for metric in ("difference{", "difference_lower{", "difference_upper{"):
        assert f"modelmon_version_accuracy_{metric}" in diff
    table = versions["Verdict per window"]
    assert table["type"] == "table" and table["targets"][0]["format"] == "table"
    assert table["targets"][0]["instant"] is True and "modelmon_version_verdict" in exprs["Verdict per window"]
    shown = table["transformations"][0]["options"]["indexByName"]
    assert {"verdict", "reason", "baseline", "candidate"} <= set(shown)
    assert "modelmon_version_verdict" in exprs["Verdict: candidate vs baseline"]

    picker = next(v for v in dash["templating"]["list"] if v["name"] == "model_version")
    assert picker["query"]["query"] == 'label_values(modelmon_requests_per_second{model="$model"}, model_version)'
    assert picker["multi"] and picker["current"]["value"] == ["*"]
    assert "model_version" in regex_variables(dash)
    # Every panel on monitor results filters on the picked versions (with =~: Grafana escapes the values).
    for panel, t in panel_targets(dash):
        if panel["title"] in versions or "model_version" not in t["expr"]:
            continue
        assert 'model_version=~"$model_version"' in t["expr"], panel["title"]
        assert "{{model_version}}" in t["legendFormat"], panel["title"]
    monitor_results = [t for p, t in panel_targets(dash) if p["title"] not in versions and "window=" in t["expr"]]
    assert monitor_results and all("$model_version" in t["expr"] for t in monitor_results)


def test_fairness_draws_the_four_fifths_line() -> None:
    dash = build_all()["fairness"]
    di = next(p for p in dash["panels"] if p["title"] == "Disparate-impact ratio")
    steps = di["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "transparent", "value": 0.8} in steps
    assert di["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
    assert next(p for p in dash["panels"] if p["type"] == "row")["repeat"] == "attribute"


def test_substitute_fills_grafana_variables() -> None:
    expr = 'rate(x{model="$model",v=~"${model_version}"}[$__rate_interval]) [$window] $__interval $__range'
    out = substitute(expr, {**EXAMPLE_VARS, "model_version": "v1"})
    assert out == 'rate(x{model="fraud",v=~"v1"}[1m]) [5m] 15s 1h'


def test_substitute_escapes_multi_value_variables_like_grafana() -> None:
    """Grafana's Prometheus datasource regex-escapes multi-value variables (prometheusSpecialRegexEscape)."""
    expr = 'x{model="$model", model_version=~"$model_version"}'
    regex = frozenset({"model_version"})
    assert substitute(expr, EXAMPLE_VARS, regex=regex) == 'x{model="fraud", model_version=~"\\\\*"}'
    assert substitute(expr, {**EXAMPLE_VARS, "model_version": "v1.2"}, regex=regex).endswith('=~"v1\\\\.2"}')
    assert substitute(expr, EXAMPLE_VARS) == 'x{model="fraud", model_version=~"*"}'  # not multi-value: as is


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel and variable query (with variables filled in)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (scripts/setup.sh installs it)"
    rules = []
    for name, dash in build_all().items():
        regex = regex_variables(dash)
        for i, (panel, t) in enumerate(panel_targets(dash)):
            rules.append({"record": f"check:{name.replace('-', '_')}:{i}",
                          "expr": substitute(t["expr"], EXAMPLE_VARS, regex=regex),
                          "labels": {"panel": panel["title"]}})
        for j, (_var, (metric_selector, _label)) in enumerate(variable_queries(dash).items()):
            rules.append({"record": f"check:{name.replace('-', '_')}:var{j}",
                          "expr": substitute(metric_selector, EXAMPLE_VARS, regex=regex)})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(rules)} rules found" in proc.stdout


def test_provisioning_points_at_the_datasource_and_json_folder() -> None:
    ds = yaml.safe_load((PROVISIONING_DIR / "datasources" / "modelmon.yml").read_text())
    (source,) = ds["datasources"]
    assert source["uid"] == grafana.DATASOURCE_UID and source["type"] == "prometheus"
    prov = yaml.safe_load((PROVISIONING_DIR / "dashboards" / "modelmon.yml").read_text())
    (provider,) = prov["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/modelmon"
    for dash in build_all().values():
        current = dash["templating"]["list"][0]["current"]["value"]
        assert current == grafana.DATASOURCE_UID
