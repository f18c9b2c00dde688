"""A fleet on one scheduler (issue 14): 300 models, short intervals, one job that hangs.

Every family of every model must run within two intervals of its previous
run, the label reconciliation at every tick, and the hanging job must show up
in `modelmon_monitor_schedule_delay_seconds` and fire `ModelmonMonitorBehind`
in a real Prometheus running the generated rules, for its family only.
"""

from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import servers
from prometheus_client import CollectorRegistry, start_http_server
from promstack import HOST, Prometheus
from synth_events import NOW, events, migrated_engine, store

from modelmon.alerts.rules import RuleOptions, write_rules
from modelmon.config import Config
from modelmon.monitors.base import MetricRow, Window, WindowedRow
from modelmon.monitors.results import runs
from modelmon.monitors.scheduler import RECONCILE_JOB, MonitorScheduler

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODELS = 300
INTERVAL = 5.0
RUN_FOR = 4 * INTERVAL  # after the first pass
BEHIND = 3 * INTERVAL  # defaults.thresholds.schedule_delay: above any delay of a fair backlog
STALLED = "fleet-007"
FAMILIES = ("fa", "fb", "fc", "stall")


def _family(name: str, gate: threading.Event | None = None) -> str:
    """A family module whose jobs take ~2 ms and write two rows; with `gate`, the
    STALLED model's job blocks while the gate is closed."""
    module = types.ModuleType(f"modelmon_test_fleet_{name}")

    def collect(conn, model, now):  # type: ignore[no-untyped-def]
        if gate is not None and model.name == STALLED:
            gate.wait(120)
        time.sleep(0.002)
        w = Window("1h", now - 3600, now)
        return [WindowedRow(w, MetricRow(f"{name}_tick", now, 10)),
                WindowedRow(w, MetricRow(f"{name}_other", 1.0, 10))]

    module.collect = collect  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    return module.__name__


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    event.set()  # open for the first pass (readiness needs every job's first attempt)
    yield event
    event.set()
    for name in FAMILIES:
        sys.modules.pop(f"modelmon_test_fleet_{name}", None)


def test_a_fleet_runs_every_family_in_time_and_a_stalled_family_alerts(tmp_path: Path, gate) -> None:
    engine = migrated_engine(f"sqlite:///{tmp_path}/fleet.db")
    rng = np.random.default_rng(14)
    rows = []
    for i in range(MODELS):
        rows += events(rng, 3, ["a", "b"], start=NOW - 600, end=NOW, model=f"fleet-{i:03d}", prefix=f"{i}-")
    store(engine, rows)
    cfg = Config.model_validate({
        "defaults": {"windows": ["1h"], "interval": f"{INTERVAL:g}s",
                     "thresholds": {"schedule_delay": f"{BEHIND:g}s"}},
        "monitors": {"max_workers": 4, "history_interval": "1h"},
        "retention": {"enabled": False},
    })
    families = {f: _family(f, gate if f == "stall" else None) for f in FAMILIES}
    sched = MonitorScheduler(cfg, engine, families=families)
    registry = CollectorRegistry()
    registry.register(sched.collector())
    port = servers.free_port()
    server, _thread = start_http_server(port, addr=HOST, registry=registry)
    rule_files = write_rules(cfg, tmp_path / "rules", RuleOptions(for_scale=0.01))
    prom = Prometheus(tmp_path / "prometheus", [f"{HOST}:{port}"],
                      [p for p in rule_files if p.name == "service.yml"])
    try:
        t0 = time.monotonic()
        sched.start()
        deadline = time.monotonic() + 60
        while not sched.first_pass_done and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sched.first_pass_done
        first_pass = time.monotonic() - t0
        gate.clear()  # from now on the stalled model's `stall` job hangs at its next run
        started = time.time()
        time.sleep(RUN_FOR)
        ended = time.time()
        jobs = {j.name: j for j in sched.jobs()}
        firing = None
        deadline = time.monotonic() + 40
        while firing is None and time.monotonic() < deadline:
            firing = next((a for a in prom.alerts() if a["labels"].get("alertname") == "ModelmonMonitorBehind"
                           and a["state"] == "firing"), None)
            time.sleep(0.5)
        alerts = prom.alerts()
        delay = {r["metric"]["monitor"]: r["value"] for r in prom.query("modelmon_monitor_schedule_delay_seconds")}
    finally:
        gate.set()
        sched.stop()
        prom.stop()
        server.shutdown()
    # Every family of every model ran within two intervals, over the whole run.
    model_jobs = [j for name, j in jobs.items() if ":" in name and j.model != "*"]
    assert len(model_jobs) == MODELS * len(FAMILIES)
    worst: dict[str, float] = {}
    for job in model_jobs:
        if job.name == f"stall:{STALLED}":
            continue
        starts = [r.started for r in job.recent] + [ended]
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False) if b > started - 2 * INTERVAL]
        worst[job.family] = max(worst.get(job.family, 0.0), *gaps)
        assert max(gaps) <= 2 * INTERVAL, (job.name, gaps)
    late = sum(j.late for j in model_jobs)
    print(f"\nfirst pass {first_pass:.1f}s; worst gap between runs per family (s, interval "
          f"{INTERVAL:g}): {worst}; runs started > 1 interval late: {late}")
    # The reconciliation ran at every tick.
    reconcile = jobs[RECONCILE_JOB]
    assert reconcile.late == 0
    assert len([r for r in reconcile.recent if started <= r.started <= ended]) >= RUN_FOR / INTERVAL - 1
    # The stalled job: its family alone is behind, and alerts.
    assert firing is not None, alerts
    assert firing["labels"]["monitor"] == "stall" and firing["labels"]["severity"] == "ticket"
    behind = {a["labels"]["monitor"] for a in alerts if a["labels"].get("alertname") == "ModelmonMonitorBehind"}
    assert behind == {"stall"}
    assert delay["stall"] > BEHIND and max(v for k, v in delay.items() if k != "stall") < BEHIND
    with engine.connect() as conn:
        done = {r["job"] for r in runs(conn) if r["last_success"] is not None}
    assert len(done) >= MODELS * len(FAMILIES) - 1
    engine.dispose()
