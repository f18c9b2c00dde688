"""Benchmark: the monitor scheduler on a fleet, in real time.

    python -m bench fleet [--models 1000] [--rows 20] [--interval 10] [--seconds 90] [--workers 4]

An SQLite store with `--models` models x `--rows` predictions each (bench/_store.py:
raw rows, baselines, rollups) is loaded in a child process; another child runs
the real scheduler (every family, `--workers` threads, `--interval` per model)
until every job was attempted once (the first pass, timed), then for
`--seconds` more, and reads its in-memory schedule: per family, the jobs, the
runs started in that window, how many started on time (within one interval of
their due time) or late, the slots coalesced away (missed), the worst gap
between two runs of one job and the jobs that did not run at all in the
window (starved). It also times `/metrics` as the service serves it
(alerts/exposition.py): the background refresh (store read and rendering of
the monitor results, once per refresh period) and a scrape (the last
rendering plus the live registry with the scheduler's collector), plain text
and gzip, and reports the process's peak RSS. Targets: no job starved, scrape <= 1 s, peak RSS <= 300 MB.
A pass slower than the interval is expected at this size: the point is that
every family then runs late in turn, visibly, instead of some never running.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._store import config_dict, fleet_models, load

ROOT = Path(__file__).resolve().parent.parent
SCRAPE_TARGET_S = 1.0
RSS_TARGET_MB = 300.0


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _config(models: list[str], interval: float, workers: int) -> dict[str, Any]:
    cfg = config_dict(models)
    for settings in cfg["models"].values():
        settings["interval"] = f"{interval:g}s"
    cfg["monitors"] = {"discover_models": False, "max_workers": workers}
    cfg["retention"] = {"enabled": False}
    return cfg


def child_load(url: str, n: int, rows: int, interval: float) -> None:
    print(json.dumps(load(url, fleet_models(n), rows)))


def child_run(url: str, n: int, interval: float, seconds: float, workers: int) -> None:
    """The scheduler in real time; prints the per-family table's numbers as JSON."""
    import logging

    from prometheus_client import CollectorRegistry

    from modelmon.alerts.exporter import MonitorResultsCollector
    from modelmon.alerts.exposition import MetricsExposition
    from modelmon.config import Config
    from modelmon.monitors.scheduler import MonitorScheduler
    from modelmon.store.engine import make_engine

    logging.basicConfig(level=logging.WARNING)
    cfg = Config.model_validate(_config(fleet_models(n), interval, workers))
    engine = make_engine(url)
    sched = MonitorScheduler(cfg, engine)
    live = CollectorRegistry()
    live.register(sched.collector())
    # refresh() by hand below: what the service's background thread does per period
    exposition = MetricsExposition(MonitorResultsCollector(engine, cfg), live, refresh_seconds=3600)
    t0 = time.monotonic()
    sched.start()
    try:
        while not sched.first_pass_done:
            time.sleep(0.1)
        first_pass = time.monotonic() - t0
        start = time.time()
        time.sleep(seconds)
        end = time.time()
        jobs = sched.jobs()
        t = time.perf_counter()
        exposition.refresh()  # while the workers run
        refresh_s = time.perf_counter() - t
        t = time.perf_counter()
        text, _, _ = exposition.serve("text/plain", "")  # a scrape, as Prometheus would
        scrape_s = time.perf_counter() - t
        t = time.perf_counter()
        gz, _, _ = exposition.serve("text/plain", "gzip")
        gzip_s = time.perf_counter() - t
    finally:
        sched.stop()
    families: dict[str, dict[str, float]] = {}
    for job in jobs:
        f = families.setdefault(job.family, {"jobs": 0, "runs": 0, "on_time": 0, "late": 0, "missed": 0,
                                             "starved": 0, "worst_gap": 0.0, "max_start_delay": 0.0})
        f["jobs"] += 1
        window = [r for r in job.recent if start <= r.started <= end]
        f["runs"] += len(window)
        f["late"] += sum(r.started - r.due > job.interval for r in window)
        f["on_time"] += sum(r.started - r.due <= job.interval for r in window)
        f["starved"] += not window
        starts = [r.started for r in job.recent if r.started >= start - 2 * max(interval, first_pass)]
        gaps = [b - a for a, b in zip([*starts, end], [*starts, end][1:], strict=False)]
        f["worst_gap"] = max(f["worst_gap"], *gaps) if gaps else f["worst_gap"]
        f["max_start_delay"] = max(f["max_start_delay"], *[r.started - r.due for r in window], 0.0)
        f["missed"] += job.missed
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    engine.dispose()
    print(json.dumps({"first_pass": first_pass, "window": end - start, "families": families,
                      "scrape_s": scrape_s, "gzip_s": gzip_s, "refresh_s": refresh_s,
                      "scrape_bytes": len(text), "gzip_bytes": len(gz), "series": series,
                      "rss": peak_rss_mb()}))


def run_child(kind: str, *args: object) -> dict[str, Any]:
    call = f"child_{kind}({', '.join(repr(a) for a in args)})"
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.fleet import child_{kind}; {call}"
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed (exit {proc.returncode})")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench fleet", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=20, help="predictions per model")
    ap.add_argument("--interval", type=float, default=10.0, help="every model's interval (s)")
    ap.add_argument("--seconds", type=float, default=90.0, help="how long to watch after the first pass")
    ap.add_argument("--workers", type=int, default=4, help="monitors.max_workers")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="modelmon-bench-fleet-") as tmp:
        url = f"sqlite:///{tmp}/fleet.db"
        t = time.perf_counter()
        run_child("load", url, args.models, args.rows, args.interval)
        print(f"store loaded in {time.perf_counter() - t:.0f}s", file=sys.stderr)
        r = run_child("run", url, args.models, args.interval, args.seconds, args.workers)
    print_table(args, r)
    return 0


def print_table(args: argparse.Namespace, r: dict[str, Any]) -> None:
    fams = r["families"]
    print(f"\nScheduler on {args.models} models (SQLite, {args.rows} predictions each), interval "
          f"{args.interval:g} s, {args.workers} workers; first pass {r['first_pass']:.1f} s, then "
          f"{r['window']:.0f} s watched")
    head = ["monitor", "jobs", "runs", "on time", "late", "missed slots", "starved", "worst gap s",
            "max start delay s"]
    lines = [head]
    for name in sorted(fams, key=lambda k: (k.endswith("*"), k)):
        f = fams[name]
        lines.append([name, f"{f['jobs']:.0f}", f"{f['runs']:.0f}", f"{f['on_time']:.0f}", f"{f['late']:.0f}",
                      f"{f['missed']:.0f}", f"{f['starved']:.0f}", f"{f['worst_gap']:.1f}",
                      f"{f['max_start_delay']:.1f}"])
    widths = [max(len(x[i]) for x in lines) for i in range(len(head))]
    for i, row in enumerate(lines):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    starved = sum(f["starved"] for f in fams.values())
    print(f"\nfull pass (first, every job once): {r['first_pass']:.1f} s")
    print(f"reconcile runs in the window: {fams.get('reconcile_labels', {}).get('runs', 0):.0f}")
    worst = max(r["scrape_s"], r["gzip_s"])
    print(f"/metrics scrape: {r['scrape_s']:.3f} s plain ({r['scrape_bytes']:,} bytes), "
          f"{r['gzip_s']:.3f} s gzip ({r['gzip_bytes']:,} bytes), {r['series']:,} series "
          f"(target <= {SCRAPE_TARGET_S:g} s: {'yes' if worst <= SCRAPE_TARGET_S else 'NO'})")
    print(f"/metrics background refresh (store read + rendering, once per period): {r['refresh_s']:.2f} s")
    print(f"peak RSS: {r['rss']:.0f} MB (target <= {RSS_TARGET_MB:g} MB: "
          f"{'yes' if r['rss'] <= RSS_TARGET_MB else 'NO'})")
    print(f"starved jobs (no run in the window): {starved:.0f} (target 0: {'yes' if starved == 0 else 'NO'})")
