"""`modelmon ingest` serves /metrics, /healthz and /readyz on its own port.

A real `modelmon ingest` subprocess (SQLite store, no broker reachable: the
consumer keeps retrying) is asked what Prometheus and a kubelet would ask.
"""

from __future__ import annotations

import base64
import gzip
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelmon.ingest.metrics import IngestMetrics
from modelmon.serving import RegistryExposition, process_registry

TOKEN = "scrape-secret"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """(status, headers: case-insensitive, repeatable), body)."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def _config(tmp_path: Path, **ingest: object) -> Path:
    path = tmp_path / "modelmon.yaml"
    path.write_text(yaml.safe_dump({
        "database": {"url": f"sqlite:///{tmp_path / 'store.db'}"},
        "kafka": {"bootstrap_servers": f"127.0.0.1:{_closed_port()}"},
        "server": {"metrics_tokens": [TOKEN]},
        "ingest": ingest,
    }))
    return path


def _modelmon(config: Path, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMON_")}
    out = log.open("ab") if log is not None else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", "modelmon", "-c", str(config), *args],
                            stdout=out, stderr=subprocess.STDOUT, env={**env, "PYTHONUNBUFFERED": "1"})


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    config = _config(tmp_path, http_port=0)
    assert _modelmon(config, "db", "upgrade").wait(60) == 0
    port_file, log = tmp_path / "port", tmp_path / "ingest.log"
    proc = _modelmon(config, "ingest", "--port", "0", "--port-file", str(port_file), log=log)
    try:
        import servers

        assert servers.wait_until(lambda: port_file.exists() and proc.poll() is None, 30), log.read_text()
        yield f"http://127.0.0.1:{int(port_file.read_text())}", log, config
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_ingest_serves_metrics_health_and_readiness(ingest: tuple[str, Path, Path]) -> None:
    url, log, _ = ingest
    port = int(url.rsplit(":", 1)[1])
    assert f"modelmon ingest serving on {url} (/metrics, /healthz, /readyz)" in log.read_text()

    # /metrics: the scrape tokens of server.metrics_tokens, as on every process.
    status, headers, _ = _get(url + "/metrics")
    assert status == 401
    assert {c.split()[0] for c in headers.get_all("WWW-Authenticate")} == {"Bearer", "Basic"}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, headers, body = _get(url + "/metrics", bearer)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"modelmon_ingest_batch_size", "modelmon_ingest_db_errors", "process_cpu_seconds",
            "process_resident_memory_bytes"} <= families, sorted(families)
    basic = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{TOKEN}".encode()).decode()}
    assert _get(url + "/metrics", basic)[0] == 200

    # What Prometheus sends: OpenMetrics, gzip.
    status, headers, body = _get(url + "/metrics", {
        **bearer, "Accept": "application/openmetrics-text;version=1.0.0", "Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert gzip.decompress(body).endswith(b"# EOF\n")

    # Probes stay open: alive (the consumer retries), not ready (no consumer yet).
    status, _, body = _get(url + "/healthz")
    assert status == 200, body
    status, _, body = _get(url + "/readyz")
    assert status == 503 and b'"consumer": false' in body and b'"store": true' in body
    assert port > 0


@pytest.mark.slow
def test_a_taken_port_is_one_clear_line(ingest: tuple[str, Path, Path]) -> None:
    url, _, config = ingest
    port = url.rsplit(":", 1)[1]
    second = _modelmon(config, "ingest", "--port", port)
    out, _ = second.communicate(timeout=30)
    assert second.returncode == 2
    lines = out.decode().strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], lines
    assert "--port" in lines[0] and "Traceback" not in out.decode()


def test_registry_exposition_negotiates_like_prometheus_client() -> None:
    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    registry = process_registry()
    metrics = IngestMetrics(registry)
    metrics.dead_letters.labels("invalid_json").inc(3)
    exposition = RegistryExposition(registry)

    def dead_letters(text: bytes) -> list[bytes]:
        return [line for line in text.splitlines() if line.startswith(b"modelmon_ingest_dead_letters")]

    body, content_type, headers = exposition.serve("", "")
    assert content_type.startswith("text/plain; version=0.0.4") and headers == []
    assert dead_letters(body) == dead_letters(generate_latest(registry))
    body, content_type, headers = exposition.serve("application/openmetrics-text", "gzip")
    assert content_type.startswith("application/openmetrics-text")
    assert headers == [("Content-Encoding", "gzip")]
    assert dead_letters(gzip.decompress(body)) == dead_letters(generate_openmetrics(registry))
