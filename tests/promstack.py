"""A real Prometheus + Alertmanager stack around a running modelmon, for integration tests.

    from promstack import promstack

    with promstack(cfg, tmp_path, for_scale=0.005) as stack:
        stack.runtime            # modelmon Runtime (ingest + monitors + HTTP), in-process
        stack.prometheus.query('modelmon_class_shift_psi')   # instant query -> [ {metric, value} ]
        stack.prometheus.alerts()                            # active alerts (pending and firing)
        stack.webhook.wait_for(lambda a: a["labels"]["alertname"] == "X", timeout=30)

Everything binds to 127.0.0.1 on free ports with storage under `workdir`; the
generated rules (from the same configuration, `for:` scaled by `for_scale`)
are loaded; Prometheus scrapes modelmon every `scrape_interval` and sends to
Alertmanager, which routes every alert to the local webhook receiver with a
short group_wait. Kept free of pytest; processes are stopped on exit (and by
`servers.ManagedProcess` at interpreter exit / parent death).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import servers
import yaml

PROMETHEUS = Path(shutil.which("prometheus") or "/usr/bin/prometheus")
ALERTMANAGER = Path(shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager")
HOST = servers.HOST


def _http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


class WebhookReceiver:
    """Collects Alertmanager webhook notifications; each alert is stamped with its arrival."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrived = time.monotonic()
                payload = json.loads(body or b"{}")
                payload["_received_monotonic"] = arrived
                payload["_path"] = self.path
                with receiver._cond:
                    receiver.notifications.append(payload)
                    receiver._cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_port}/alerts"

    def alerts(self, status: str | None = "firing") -> list[dict[str, Any]]:
        """Every alert received, each with `_received_monotonic` and the receiver path."""
        with self._cond:
            out = []
            for n in self.notifications:
                for a in n.get("alerts", []):
                    if status is None or a.get("status") == status:
                        out.append({**a, "_received_monotonic": n["_received_monotonic"], "_path": n["_path"]})
            return out

    def wait_for(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any] | None:
        """The first firing alert satisfying `match`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for a in self.alerts():
                    if match(a):
                        return a
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Prometheus:
    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        rule_files: list[Path],
        alertmanager: str | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        job: str = "modelmon",
        scrape_auth: dict[str, Any] | None = None,
    ) -> None:
        """`scrape_auth` is merged into the scrape config, e.g. {"authorization": {"credentials": t}}
        or {"basic_auth": {"username": u, "password": p}}."""
        servers.require_executable(PROMETHEUS, "prometheus (Debian package prometheus)")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}], **(scrape_auth or {})}],
        }
        if alertmanager:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = servers.free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.process = servers.Child(
            "prometheus",
            [
                str(PROMETHEUS),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={HOST}:{self.port}",
                "--web.enable-lifecycle",
            ],
            workdir / "prometheus.log",
        )
        if not servers.wait_until(lambda: _ready(self.url + "/-/ready"), 30):
            self.stop()
            raise servers.ServerStartError("prometheus did not start:\n" + servers.log_tail(workdir / "prometheus.log"))

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; each result {metric: {...}, value: float}."""
        data = _http_json(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if data.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {data}")
        result = data["data"]["result"]
        if data["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": float(result[1])}]
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in result]

    def alerts(self) -> list[dict[str, Any]]:
        return list(_http_json(self.url + "/api/v1/alerts")["data"]["alerts"])

    def targets_up(self) -> bool:
        active = _http_json(self.url + "/api/v1/targets")["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def rule_health(self) -> list[tuple[str, str, str]]:
        """(rule name, health, last error) for every rule that is not healthy."""
        bad = []
        for group in _http_json(self.url + "/api/v1/rules")["data"]["groups"]:
            for rule in group["rules"]:
                if rule.get("health") not in ("ok", "unknown"):
                    bad.append((rule["name"], rule.get("health", ""), rule.get("lastError", "")))
        return bad

    def stop(self) -> None:
        self.process.stop()


def alertmanager_config(webhook_url: str, group_wait: str = "1s") -> dict[str, Any]:
    """Severity routing like alerts/alertmanager.yml, but every receiver is the test webhook."""
    hook = [{"url": webhook_url, "send_resolved": True}]
    return {
        "route": {
            "receiver": "ticket",
            "group_by": ["alertname", "model"],
            "group_wait": group_wait,
            "group_interval": "1s",
            "repeat_interval": "1h",
            "routes": [
                {"receiver": "page", "matchers": ['severity="page"']},
                {"receiver": "ticket", "matchers": ['severity="ticket"']},
            ],
        },
        "receivers": [
            {"name": "page", "webhook_configs": [{**hook[0], "url": webhook_url + "/page"}]},
            {"name": "ticket", "webhook_configs": [{**hook[0], "url": webhook_url + "/ticket"}]},
        ],
    }


class Alertmanager:
    def __init__(self, workdir: Path, config: dict[str, Any]) -> None:
        servers.require_executable(ALERTMANAGER, "prometheus-alertmanager (Debian package prometheus-alertmanager)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = servers.free_port()
        self.address = f"{HOST}:{self.port}"
        self.url = f"http://{self.address}"
        self.process = servers.Child(
            "alertmanager",
            [
                str(ALERTMANAGER),
                f"--config.file={self.config_path}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address={self.address}",
                "--cluster.listen-address=",
            ],
            workdir / "alertmanager.log",
        )
        if not servers.wait_until(lambda: _ready(self.url + "/-/ready"), 30):
            self.stop()
            raise servers.ServerStartError(
                "alertmanager did not start:\n" + servers.log_tail(workdir / "alertmanager.log")
            )

    def alerts(self) -> list[dict[str, Any]]:
        return list(_http_json(self.url + "/api/v2/alerts"))

    def stop(self) -> None:
        self.process.stop()


@dataclass
class Stack:
    runtime: Any  # modelmon.runtime.Runtime
    prometheus: Prometheus
    alertmanager: Alertmanager
    webhook: WebhookReceiver
    rules_dir: Path

    @property
    def metrics_url(self) -> str:
        return self.runtime.url + "/metrics"


@contextlib.contextmanager
def promstack(
    cfg: Any,
    workdir: Path,
    *,
    with_ingest: bool = True,
    for_scale: float = 0.01,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    group_wait: str = "1s",
    warmup: Callable[[Any], None] | None = None,
    scrape_auth: dict[str, Any] | None = None,
) -> Iterator[Stack]:
    """modelmon Runtime + Prometheus (generated rules) + Alertmanager + webhook receiver.

    `cfg` is a modelmon Config (its server port is ignored: a free one is used).
    `warmup(runtime)` runs after modelmon is up and before Prometheus starts, e.g.
    to send the first events so absent()-based alerts start from a live model.
    `scrape_auth` goes into Prometheus' scrape config (see `Prometheus`), for a
    `cfg` with `server.metrics_tokens`.
    """
    from modelmon.alerts.rules import RuleOptions, write_rules
    from modelmon.runtime import Runtime

    rules_dir = workdir / "rules"
    rule_files = write_rules(cfg, rules_dir, RuleOptions(for_scale=for_scale))
    with contextlib.ExitStack() as stack:
        runtime = Runtime(cfg, with_ingest=with_ingest, host=HOST, port=0, metrics_refresh_seconds=0)
        runtime.start()
        stack.callback(runtime.stop)
        if not servers.wait_until(runtime.ready, 60):
            raise servers.ServerStartError(f"modelmon not ready: {runtime.readiness()}")
        if warmup is not None:
            warmup(runtime)
        webhook = WebhookReceiver()
        stack.callback(webhook.stop)
        am = Alertmanager(workdir / "alertmanager", alertmanager_config(webhook.url, group_wait))
        stack.callback(am.stop)
        prom = Prometheus(
            workdir / "prometheus", [f"{HOST}:{runtime.http_port}"], rule_files, am.address,
            scrape_interval, evaluation_interval, scrape_auth=scrape_auth,
        )
        stack.callback(prom.stop)
        if not servers.wait_until(prom.targets_up, 30):
            raise servers.ServerStartError("prometheus never scraped modelmon successfully")
        yield Stack(runtime, prom, am, webhook, rules_dir)
