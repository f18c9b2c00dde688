"""`modelmon demo` end to end: it runs, the incidents show in the monitor results,
the alerts fire in a real Prometheus, and it leaves no process behind (at the
end of --duration and on Ctrl-C).

The demo runs under a small wrapper that makes itself a child subreaper, so a
process the demo failed to stop would be re-parented to the wrapper and listed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from modelmon.config import Thresholds
from modelmon.demo.expectations import ALERTS
from modelmon.demo.simulator import FRAUD, LEAD_IN, SPECIES, default_incidents
from modelmon.store.tables import monitor_results, predictions

DURATION = 180.0  # the schedule holds from 120 s (tests/demo/test_schedule.py); 180 s leaves margin on a loaded CI machine
ALERT_LOG = re.compile(r"^\s*(\d+)s  (\w+) (\w+) (started firing|resolved)\s*$")
MODELMON = str(Path(sys.executable).with_name("modelmon"))

WRAPPER = r"""
import ctypes, json, os, signal, subprocess, sys, time
ctypes.CDLL("libc.so.6").prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
demo = subprocess.Popen(sys.argv[1:])
signal.signal(signal.SIGINT, lambda *_: demo.send_signal(signal.SIGINT))
rc = demo.wait()
time.sleep(1.0)
def children():
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and state != "Z":
            out.append({"pid": int(d), "cmd": cmd})
    return out
left = children()
for c in left:
    try:
        os.kill(c["pid"], signal.SIGKILL)
    except OSError:
        pass
print("WRAPPER " + json.dumps({"rc": rc, "left": left}), flush=True)
"""


def run_demo(args: list[str], interrupt_when: str | None = None, timeout: float = 200.0) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, MODELMON, "demo", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if interrupt_when and interrupt_when in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if interrupt_when:
            assert seen.wait(60), "".join(lines)
            time.sleep(3)  # traffic flowing, monitors running
            proc.send_signal(signal.SIGINT)  # what Ctrl-C does to the foreground job
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(5)
    out = "".join(lines)
    summary = [line for line in lines if line.startswith("WRAPPER ")]
    assert summary, out
    return json.loads(summary[-1][len("WRAPPER "):]), out


def test_demo_runs_shows_incidents_and_cleans_up(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    result, out = run_demo(["--duration", str(int(DURATION)), "--db", str(db), "--port", "0"])
    assert result["rc"] == 0, out
    assert result["left"] == [], f"processes left behind: {result['left']}\n{out}"
    assert "Prometheus http://127.0.0.1:" in out and "Alertmanager http://127.0.0.1:" in out, out
    assert "everything the demo started has stopped" in out

    incidents = {i.kind: i for i in default_incidents(DURATION)}
    psi_max = Thresholds().psi
    engine = sa.create_engine(f"sqlite:///{db}")
    r = monitor_results.c
    with engine.connect() as conn:
        start = conn.execute(sa.select(sa.func.min(predictions.c.ts))).scalar()
        assert start is not None, out

        def series(model: str, metric: str, window: str, **labels: str) -> list[tuple[float, float]]:
            rows = conn.execute(sa.select(r.computed_at, r.value, r.labels).where(
                r.model == model, r.metric == metric, r.window == window, r.model_version == "*",
                r.status == "ok").order_by(r.computed_at)).all()
            return [(t - start, v) for t, v, lab in rows if all(dict(lab).get(k) == x for k, x in labels.items())]

        # Class shift: PSI against the research baseline crosses the threshold during the
        # incident, and is back under it once the 1m window has left it (the run's only window).
        shift = incidents["class_shift"]
        psi = series(SPECIES, "class_shift_psi", "1m", baseline="research")
        during = [v for t, v in psi if shift.start <= t <= shift.end + 10]
        after = [v for t, v in psi if shift.end + 70 <= t]
        assert during and max(during) > psi_max, psi
        assert all(v < psi_max for v in after), psi
        assert max(v for t, v in series(FRAUD, "class_shift_psi", "1m", baseline="research")) < psi_max

        # Latency regression: fraud's p95 goes over its 300 ms SLO threshold only in the incident.
        slow = incidents["latency"]
        p95 = series(FRAUD, "latency_seconds", "1m", quantile="0.95")
        assert max(v for t, v in p95 if slow.start <= t <= slow.end + 10) > 0.3, p95
        assert all(v < 0.3 for t, v in p95 if t >= slow.end + 65), p95

        # Canary regression: the compare family sets v4 against v3 (auto: the two busiest, v3 by
        # name as both start together) and v4's accuracy falls below v3's in the 1m window.
        canary = incidents["canary_regression"]
        diff = conn.execute(sa.select(r.computed_at, r.value, r.labels).where(
            r.model == FRAUD, r.metric == "version_accuracy_difference", r.window == "1m",
            r.model_version == "*", r.status == "ok").order_by(r.computed_at)).all()
        assert diff and {(dict(lab)["baseline"], dict(lab)["candidate"]) for _, _, lab in diff} == {("v3", "v4")}
        assert min(v for t, v, _ in diff if t - start > canary.start) < 0, diff

        # Pause: species sends nothing for the incident, fraud keeps going.
        pause = incidents["pause"]

        def longest_gap(model: str) -> float:
            ts = np.array(conn.execute(sa.select(predictions.c.ts).where(predictions.c.model == model)
                                       .order_by(predictions.c.ts)).scalars().all())
            return float(np.diff(ts).max())

        assert longest_gap(SPECIES) > (pause.end - pause.start) - 1.0
        assert longest_gap(FRAUD) < 1.5

    # Each incident's alert fired in the real Prometheus the demo started, none before the
    # first incident, and each resolved before the end.
    log = [m.groups() for m in map(ALERT_LOG.match, out.splitlines()) if m]
    for inc in incidents.values():
        name = ALERTS[inc.kind]
        fired = [int(t) for t, alert, model, what in log if (alert, model, what) == (name, inc.model, "started firing")]
        resolved = [int(t) for t, alert, model, what in log if (alert, model, what) == (name, inc.model, "resolved")]
        assert fired and resolved and min(fired) < max(resolved), (inc, log, out)
    assert all(int(t) >= LEAD_IN * DURATION for t, _, _, what in log if what == "started firing"), log


def test_ctrl_c_stops_everything(tmp_path: Path) -> None:
    t0 = time.monotonic()
    result, out = run_demo(["--duration", "300", "--port", "0"], interrupt_when="Prometheus http://")
    assert time.monotonic() - t0 < 120, out
    assert result["rc"] == 0, out
    assert result["left"] == [], f"processes left behind: {result['left']}\n{out}"
    assert "stopped (Ctrl-C)" in out, out
