"""`modelmon monitor --once`: one pass of every family, a table of the results, exit 0 (1 on a job
error): for cron, CI and first contact."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from modelmon.cli import main
from modelmon.monitors import scheduler

BOOM = "modelmon_test_boom_family"


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(
        f"database:\n  url: sqlite:///{tmp_path / 'store.db'}\n"
        "models:\n  fraud: {task: binary, positive_class: 1, windows: [1h]}\n",
        encoding="utf-8",
    )
    return path


def test_monitor_once_runs_a_pass_prints_a_table_and_exits(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    r = subprocess.run(
        [sys.executable, "-m", "modelmon", "-c", str(_config(tmp_path)), "monitor", "--once"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    header = next(line for line in r.stdout.splitlines() if "family" in line)
    for column in ("model", "family", "window", "metric", "value", "status", "samples"):
        assert column in header, header
    rows = [line for line in r.stdout.splitlines() if "fraud" in line]
    families = {f for f in scheduler.FAMILIES if any(f in line for line in rows)}
    assert {"accuracy", "shift", "latency"} <= families, r.stdout
    assert any("no_data" in line and "1h" in line for line in rows), r.stdout


def test_monitor_once_exits_1_when_a_job_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def collect(conn, model, now):  # type: ignore[no-untyped-def]
        raise RuntimeError("the family broke")

    monkeypatch.setitem(sys.modules, BOOM, types.SimpleNamespace(collect=collect))
    monkeypatch.setattr(
        scheduler, "FAMILIES", {"latency": scheduler.FAMILIES["latency"], "boom": BOOM}
    )
    assert main(["-c", str(_config(tmp_path)), "monitor", "--once"]) == 1
    out, err = capsys.readouterr()
    assert "latency" in out and "fraud" in out
    assert "boom:fraud" in err and "the family broke" in err
