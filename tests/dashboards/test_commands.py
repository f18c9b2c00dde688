"""`modelmon dashboards generate | check` as a user runs them: a documented output folder outside
the installed package, no file of the user's overwritten, an unreachable Prometheus said so."""

from __future__ import annotations

import socket
from pathlib import Path

from cli_run import modelmon

from modelmon.dashboards.generate import DASHBOARDS, JSON_DIR


def test_generate_writes_to_modelmon_dashboards_in_the_working_directory(tmp_path: Path) -> None:
    shipped = {p.name: p.stat().st_mtime_ns for p in JSON_DIR.glob("*.json")}
    r = modelmon("dashboards", "generate", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "modelmon-dashboards"
    assert sorted(p.name for p in out.glob("*.json")) == sorted(f"{n}.json" for n in DASHBOARDS)
    assert {p.name: p.stat().st_mtime_ns for p in JSON_DIR.glob("*.json")} == shipped
    assert (
        modelmon("dashboards", "generate", "--check", "--out", str(out), cwd=tmp_path).returncode
        == 0
    )


def test_generate_does_not_overwrite_a_file_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "grafana"
    out.mkdir()
    mine = out / "fairness.json"
    mine.write_text('{"title": "my own fairness board", "uid": "mine"}\n')
    r = modelmon("dashboards", "generate", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert "fairness.json" in r.stderr and "Traceback" not in r.stderr
    assert mine.read_text() == '{"title": "my own fairness board", "uid": "mine"}\n'
    assert not (out / "fleet-overview.json").exists()  # nothing half-written either
    # Its own earlier output it rewrites.
    other = tmp_path / "other"
    assert modelmon("dashboards", "generate", "-o", str(other), cwd=tmp_path).returncode == 0
    (other / "fairness.json").write_text(
        (other / "fairness.json").read_text().replace("Fairness", "F")
    )
    assert modelmon("dashboards", "generate", "-o", str(other), cwd=tmp_path).returncode == 0
    assert (
        modelmon("dashboards", "generate", "--check", "-o", str(other), cwd=tmp_path).returncode
        == 0
    )


def test_check_says_so_when_prometheus_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = modelmon("dashboards", "check", "--prometheus", f"http://127.0.0.1:{port}", cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert "queries return data" not in r.stdout and "no data" not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach Prometheus" in lines[0] and str(port) in lines[0], (
        r.stderr
    )


def test_generate_links_the_report_under_the_configured_api_base_url(tmp_path: Path) -> None:
    import json

    (tmp_path / "modelmon.yaml").write_text("alerts:\n  api_base_url: https://modelmon.example.net\n")
    r = modelmon("dashboards", "generate", "-c", str(tmp_path / "modelmon.yaml"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    dash = json.loads((tmp_path / "modelmon-dashboards" / "model-detail.json").read_text())
    urls = [link.get("url", "") for link in dash.get("links", [])]
    assert any(u.startswith("https://modelmon.example.net/v1/report?") for u in urls), urls
