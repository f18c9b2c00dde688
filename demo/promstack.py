"""Prometheus and Alertmanager on loopback for the demo, when their binaries exist.

Prometheus scrapes the demo's /metrics every second with the rules generated
from the demo configuration (`for:` durations scaled down so incidents alert
within the demo); Alertmanager receives the alerts (no receiver is configured:
the demo shows them, nothing is sent anywhere).
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelmon.demo.processes import HOST, Child, StartError, free_port, log_tail, wait_until

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"  # Debian's name; upstream calls it `alertmanager`


def binaries() -> tuple[str, str] | None:
    """(prometheus, alertmanager) paths if both are on PATH."""
    prom = shutil.which(PROMETHEUS)
    am = shutil.which(ALERTMANAGER) or shutil.which("alertmanager")
    return (prom, am) if prom and am else None


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback only
        return resp.status == 200


def get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


@dataclass
class Server:
    name: str
    url: str
    child: Child

    def stop(self) -> None:
        self.child.stop()


def _start(name: str, argv_for_port: Any, workdir: Path, ready_path: str, attempts: int = 3) -> Server:
    log = workdir / f"{name}.log"
    for _ in range(attempts):
        port = free_port()
        child = Child(name, argv_for_port(port), log)
        url = f"http://{HOST}:{port}"
        if wait_until(lambda c=child, u=url: not c.running() or _http_ok(u + ready_path), 20, 0.1) and child.running():
            return Server(name, url, child)
        child.stop()
    raise StartError(f"{name} did not start; {log}:\n{log_tail(log)}")


def start_alertmanager(binary: str, workdir: Path) -> Server:
    config = workdir / "alertmanager.yml"
    config.write_text(yaml.safe_dump({
        "route": {"receiver": "demo", "group_by": ["alertname", "model"], "group_wait": "1s",
                  "group_interval": "5s", "repeat_interval": "1h"},
        "receivers": [{"name": "demo"}],
    }))
    storage = workdir / "alertmanager-data"
    storage.mkdir(exist_ok=True)

    def argv(port: int) -> list[str]:
        return [binary, f"--config.file={config}", f"--storage.path={storage}",
                f"--web.listen-address={HOST}:{port}", f"--cluster.listen-address={HOST}:{free_port()}"]

    return _start("alertmanager", argv, workdir, "/-/ready")


def start_prometheus(binary: str, workdir: Path, target: str, rules_dir: Path,
                     alertmanager_url: str | None, interval: str = "1s") -> Server:
    """Start scraping first and load the rules once `target` has been scraped:
    rules evaluated before the first scrape see every series as absent."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [],
        "scrape_configs": [{"job_name": "modelmon", "static_configs": [{"targets": [target]}]}],
    }
    if alertmanager_url:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [alertmanager_url.split("://", 1)[1]]}]}]}
    path = workdir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    storage = workdir / "prometheus-data"
    storage.mkdir(exist_ok=True)

    def argv(port: int) -> list[str]:
        return [binary, f"--config.file={path}", f"--storage.tsdb.path={storage}",
                f"--web.listen-address={HOST}:{port}", "--storage.tsdb.retention.time=1d",
                "--web.enable-lifecycle"]

    server = _start("prometheus", argv, workdir, "/-/ready")
    try:
        scraped = wait_until(lambda: _scraped(server.url), 15, 0.2)
        config["rule_files"] = [str(rules_dir / "*.yml")]
        path.write_text(yaml.safe_dump(config))
        req = urllib.request.Request(f"{server.url}/-/reload", method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback only
            if resp.status != 200 or not scraped:
                raise StartError(f"prometheus did not {'reload' if scraped else 'scrape ' + target}")
    except BaseException:
        server.stop()
        raise
    return server


def _scraped(url: str) -> bool:
    data = get_json(f"{url}/api/v1/query?query=up%7Bjob%3D%22modelmon%22%7D")
    return any(r["value"][1] == "1" for r in data["data"]["result"])


def firing_alerts(prometheus_url: str) -> list[dict[str, Any]]:
    """Alerts Prometheus holds (pending and firing), newest state first."""
    data = get_json(f"{prometheus_url}/api/v1/alerts")
    return list(data.get("data", {}).get("alerts", []))
