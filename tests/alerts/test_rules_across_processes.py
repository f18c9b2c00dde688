"""The generated rules give the same alerts when several processes export the metrics.

Scale-out runs several `modelmon monitor` and `modelmon ingest` processes, each
a Prometheus target of its own. Every promtool unit test of alerts/tests is
replayed as two processes would export its series:

* monitor results and other gauges are exported by both processes alike (both
  read the shared store; a consumer that lost a partition may still export its
  last lag beside the new owner's);
* ingest counters and histograms are split between the two processes, half
  each (two consumers share the traffic), so their sum is the original.

Each process's series carry its own `instance` and `pod`. Every expected alert
must come out exactly as in the one-process test: once, with the same labels,
value and annotations. ModelmonStoreUnreachable is per process by design (the
process that cannot read the store is named), so it is checked on its own.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
UNIT_TESTS = ROOT / "alerts" / "tests"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROCESSES = ({"instance": "10.0.0.1:9464", "pod": "modelmon-a"},
             {"instance": "10.0.0.2:9464", "pod": "modelmon-b"})
PER_PROCESS_ALERTS = {"ModelmonStoreUnreachable"}
# Counters and histograms each ingest process counts for its own share of the traffic.
SPLIT = re.compile(r"^modelmon_(predictions_total|feedback_total|prediction_latency_seconds_\w+|"
                   r"ingest_\w+_total|ingest_\w+_(bucket|count|sum))$")
_SERIES = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?$")
_LABEL = re.compile(r'\s*([a-zA-Z_]\w*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(rf"^(?P<a>{_NUM})(?:(?P<op>[+-])(?P<b>{_NUM}))?(?:x(?P<n>\d+))?$")


def _parse_series(text: str) -> tuple[str, dict[str, str]]:
    m = _SERIES.match(text.strip())
    assert m, f"cannot parse series {text!r}"
    labels = dict(_LABEL.findall(m.group("labels") or ""))
    return m.group("name"), labels


def _format_series(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _expand(values: str) -> list[float | None]:
    """promtool's expanding notation ('0+10x40', '5x3', '_x2', '1 2 3') as samples."""
    out: list[float | None] = []
    for token in values.split():
        if token.startswith("_"):
            out += [None] * (int(token[2:]) if token.startswith("_x") else 1)
            continue
        m = _TOKEN.match(token)
        assert m, f"unsupported value token {token!r}"
        a, n = float(m.group("a")), int(m.group("n") or 0)
        b = float(m.group("b") or 0) * (-1 if m.group("op") == "-" else 1)
        out += [a + i * b for i in range(n + 1)] if m.group("n") else [a]
    return out


def _halve(values: str) -> str:
    return " ".join("_" if v is None else repr(v / 2) for v in _expand(values))


def as_two_processes(series: list[dict[str, str]]) -> list[dict[str, str]]:
    """The input series of one process, as two processes export them (see the module doc)."""
    out = []
    for s in series:
        name, labels = _parse_series(s["series"])
        values = _halve(s["values"]) if SPLIT.match(name) else s["values"]
        for process in PROCESSES:
            out.append({"series": _format_series(name, {**labels, **process}), "values": values})
    return out


def _suite(path: Path) -> dict[str, Any]:
    suite = yaml.safe_load(path.read_text(encoding="utf-8"))
    suite["rule_files"] = [str((path.parent / f).resolve()) for f in suite["rule_files"]]
    for test in suite["tests"]:
        test["input_series"] = as_two_processes(test["input_series"])
        test["alert_rule_test"] = [c for c in test.get("alert_rule_test", [])
                                   if c["alertname"] not in PER_PROCESS_ALERTS]
    suite["tests"] = [t for t in suite["tests"] if t["alert_rule_test"]]
    return suite


def _promtool_test(suite: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool not installed: run `make setup` (Debian package prometheus)")
    path = tmp_path / "two-processes.test.yml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return subprocess.run([PROMTOOL, "test", "rules", path.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_expansion_matches_promtools_notation() -> None:
    assert _expand("0+10x3 5x2 _x2 7 1e-6 3-1x2") == [0, 10, 20, 30, 5, 5, 5, None, None, 7, 1e-6,
                                                      3, 2, 1]
    assert _halve("0+10x2") == "0.0 5.0 10.0"
    two = as_two_processes([
        {"series": 'modelmon_predictions_total{model="m",status="ok",instance="x:1"}', "values": "0+4x1"},
        {"series": 'modelmon_accuracy_ratio{model="m"}', "values": "0.5x1"},
    ])
    assert [s["series"] for s in two] == [
        'modelmon_predictions_total{model="m",status="ok",instance="10.0.0.1:9464",pod="modelmon-a"}',
        'modelmon_predictions_total{model="m",status="ok",instance="10.0.0.2:9464",pod="modelmon-b"}',
        'modelmon_accuracy_ratio{model="m",instance="10.0.0.1:9464",pod="modelmon-a"}',
        'modelmon_accuracy_ratio{model="m",instance="10.0.0.2:9464",pod="modelmon-b"}',
    ]
    assert [s["values"] for s in two] == ["0.0 2.0", "0.0 2.0", "0.5x1", "0.5x1"]


@pytest.mark.parametrize("path", sorted(UNIT_TESTS.glob("*.test.yml")), ids=lambda p: p.name)
def test_every_unit_test_gives_the_same_alerts_from_two_processes(path: Path, tmp_path: Path) -> None:
    suite = _suite(path)
    checks = sum(len(t["alert_rule_test"]) for t in suite["tests"])
    assert checks > 0
    result = _promtool_test(suite, tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def test_store_unreachable_names_the_process_that_cannot_read(tmp_path: Path) -> None:
    """Per process by design: one alert, for the one process whose store reads fail."""
    a, b = ({**p, "job": "modelmon"} for p in PROCESSES)
    suite = {
        "rule_files": [str((UNIT_TESTS / "../rules/service.yml").resolve())],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": _format_series("modelmon_store_up", a), "values": "1x5 0x20"},
                {"series": _format_series("modelmon_store_up", b), "values": "1x25"},
            ],
            "alert_rule_test": [{"eval_time": "12m", "alertname": "ModelmonStoreUnreachable", "exp_alerts": [{
                "exp_labels": {"severity": "page", **a},
                "exp_annotations": {
                    "summary": "modelmon cannot read its store",
                    "description": f"The modelmon instance {a['instance']} cannot query its database: "
                    "monitor values are no longer exported and every monitor alert is blind.",
                    "runbook_url": "https://github.com/modelmon/modelmon/blob/main/docs/alerts.md"
                    "#runbook-modelmonstoreunreachable",
                },
            }]}],
        }],
    }
    result = _promtool_test(suite, tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
