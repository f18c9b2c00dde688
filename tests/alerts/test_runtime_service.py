"""`Runtime` and the `modelmon run` / `modelmon monitor` commands: endpoints and clean shutdown."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from modelmon.config import Config
from modelmon.runtime import Runtime

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _wait(check, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def _config(tmp_path: Path, **extra) -> dict:
    return {
        "database": {"url": f"sqlite:///{tmp_path}/modelmon.db"},
        "server": {"host": "127.0.0.1", "port": 0},
        "defaults": {"interval": "2s", "windows": ["1m", "5m"]},
        "models": {"fraud": {"task": "binary", "positive_class": 1}},
        **extra,
    }


def test_runtime_serves_health_readiness_and_promtool_clean_metrics(tmp_path: Path) -> None:
    cfg = Config.model_validate(_config(tmp_path))
    with Runtime(cfg, with_ingest=False, metrics_refresh_seconds=0) as rt:
        assert _get(rt.url + "/healthz")[0] == 200
        assert _wait(lambda: _get(rt.url + "/readyz")[0] == 200), _get(rt.url + "/readyz")
        body = json.loads(_get(rt.url + "/readyz")[1])
        assert body["checks"] == {"store": True, "first_monitor_pass": True}
        status, text = _get(rt.url + "/metrics")
        assert status == 200
        assert b"modelmon_store_up 1.0" in text
        assert b"modelmon_monitor_last_success_timestamp_seconds{" in text
        result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True)
        assert result.returncode == 0, result.stdout + result.stderr
    assert _get(rt.url + "/healthz")[0] == 0  # closed


def test_once_ready_metrics_serves_the_first_pass_from_the_background_rendering(tmp_path: Path) -> None:
    cfg = Config.model_validate(_config(tmp_path, defaults={"interval": "1h", "windows": ["1m", "5m"]}))
    with Runtime(cfg, with_ingest=False) as rt:
        assert rt.metrics_refresh_seconds == 15  # min(interval, 15 s): renders off the scrape path
        assert _wait(rt.ready, 30), rt.readiness()
        req = urllib.request.Request(rt.url + "/metrics", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.headers["Content-Encoding"] == "gzip"
            text = gzip.decompress(resp.read()).decode()
    succeeded = [line for line in text.splitlines()
                 if line.startswith("modelmon_monitor_last_success_timestamp_seconds{")]
    assert succeeded and all(float(line.split()[-1]) > 0 for line in succeeded), text


def test_not_ready_before_the_first_monitor_pass(tmp_path: Path) -> None:
    cfg = Config.model_validate(_config(tmp_path))
    rt = Runtime(cfg, with_ingest=False)
    rt.start()
    try:
        rt.scheduler.first_pass_done = False  # as right after start, before any job ran
        status, body = _get(rt.url + "/readyz")
        assert status == 503
        assert json.loads(body)["checks"]["first_monitor_pass"] is False
    finally:
        rt.stop()


def test_metrics_show_how_far_behind_schedule_each_family_is(tmp_path: Path) -> None:
    cfg = Config.model_validate(_config(tmp_path))
    with Runtime(cfg, with_ingest=False, metrics_refresh_seconds=0) as rt:
        assert _wait(rt.ready, 30), rt.readiness()
        text = _get(rt.url + "/metrics")[1].decode()
    delays = {line.split("{")[1].split("}")[0] for line in text.splitlines()
              if line.startswith("modelmon_monitor_schedule_delay_seconds{")}
    assert {f'monitor="{f}"' for f in rt.scheduler.families} <= delays, text


class _StuckIngest:
    """Stands in for IngestService: a batch uncommitted for `age` seconds."""

    def __init__(self, age: float) -> None:
        self.age = age

    def stalled_for(self) -> float:
        return self.age


def test_healthz_fails_while_ingest_holds_a_batch_past_stall_after(tmp_path: Path) -> None:
    cfg = Config.model_validate(_config(tmp_path, ingest={"stall_after": "1m"}))
    rt = Runtime(cfg, with_ingest=True)
    rt._ingest_thread = type("Alive", (), {"is_alive": lambda self: True})()
    rt.ingest = _StuckIngest(59.0)
    assert rt.health() == {"http": True, "ingest": True, "ingest_progress": True}
    rt.ingest = _StuckIngest(61.0)
    assert rt.health()["ingest_progress"] is False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", ["monitor", "run"])
def test_command_stops_cleanly_on_sigterm(command: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    raw = _config(tmp_path)
    if command == "run":
        raw["kafka"] = {
            "bootstrap_servers": request.getfixturevalue("kafka_bootstrap"),
            "predictions_topic": f"sigterm-pred-{os.getpid()}",
            "feedback_topic": f"sigterm-fb-{os.getpid()}",
            "consumer": {"session_timeout_ms": 6000},
        }
    path = tmp_path / "modelmon.yaml"
    path.write_text(yaml.safe_dump(raw))
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelmon", "-c", str(path), command, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert _wait(lambda: _get(url + "/readyz")[0] == 200, 60), proc.poll()
        if command == "run":
            assert json.loads(_get(url + "/healthz")[1])["checks"]["ingest"] is True
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert time.monotonic() - started < 20
        assert "received SIGTERM, stopping" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
