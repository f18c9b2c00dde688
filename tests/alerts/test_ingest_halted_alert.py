"""ModelmonIngestHalted with promtool on the generated service rules (issue 10)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modelmon.alerts.rules import DEFAULT_RUNBOOK_BASE, RuleOptions, generate, runbook_url
from modelmon.config import Config

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def test_a_halted_partition_pages_once_per_partition_and_resolves(tmp_path: Path) -> None:
    cfg = Config.model_validate({"ingest": {"dead_letter_limit_share": 0.6,
                                            "dead_letter_limit_messages": 500}})
    files = generate(cfg, RuleOptions(runbook_base=DEFAULT_RUNBOOK_BASE))
    (tmp_path / "service.yml").write_text(files["service.yml"])
    description = (
        "More than 60% of the last 500 messages of partition 3 of preds broke the event contract "
        "(the dead-letter limit), so ingest stopped reading that partition instead of "
        "dead-lettering on: a producer deploy is most likely broken. Nothing after the bad run "
        "is committed; that partition's events stop reaching the store until the producer is "
        "fixed and ingest restarted.")
    halted = {"exp_labels": {"severity": "page", "topic": "preds", "partition": "3"},
              "exp_annotations": {
                  "summary": "modelmon ingest halted preds[3]: too many bad messages",
                  "description": description,
                  "runbook_url": runbook_url("ModelmonIngestHalted")}}
    suite = {
        "rule_files": ["service.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                # Two processes: the old owner's series lingers beside the new owner's.
                {"series": 'modelmon_ingest_partition_halted{topic="preds",partition="3",'
                           'instance="a:9465"}', "values": "_x2 1x4 stale"},
                {"series": 'modelmon_ingest_partition_halted{topic="preds",partition="3",'
                           'instance="b:9465"}', "values": "_x4 1x2 stale"},
                {"series": 'modelmon_ingest_partition_halted{topic="preds",partition="1",'
                           'instance="a:9465"}', "values": "0x12"},
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "ModelmonIngestHalted", "exp_alerts": []},
                {"eval_time": "3m", "alertname": "ModelmonIngestHalted", "exp_alerts": [halted]},
                {"eval_time": "5m", "alertname": "ModelmonIngestHalted", "exp_alerts": [halted]},
                {"eval_time": "8m", "alertname": "ModelmonIngestHalted", "exp_alerts": []},
            ],
        }],
    }
    (tmp_path / "halted.test.yml").write_text(yaml.safe_dump(suite, sort_keys=False))
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool not installed: run `make setup` (Debian package prometheus)")
    result = subprocess.run([PROMTOOL, "test", "rules", "halted.test.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
