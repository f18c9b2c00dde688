"""Benchmark: all monitor families over a 1M-prediction window vs evidently's drift report.

    python -m bench monitors [--rows 1000000] [--rows-total 10000000] [--repeat 1]
                             [--backends sqlite,postgresql] [--pg-url URL] [--pg-db URL]

Builds a store with `--rows` predictions in the last day (10 classes, labels
for half, 2 slice attributes, latencies, 1% errors) plus `--rows-total - --rows`
older predictions of the same model spread over the 27 days before (inside the
28-day SLO period and the rolling baselines). Generating and loading the data,
the monitors and evidently each run in their own child process: the monitors
child runs every installed monitor family once for one tick (as the scheduler
does, sharing its aggregate cache) and reports its wall time and peak RSS
(VmHWM of the child's own address space: wait4's ru_maxrss would also count
the parent's pages at the exec), then evidently's ValueDrift (psi +
jensenshannon) is timed on the same window's predictions against the same
validation sample, and the PSI/JS numbers are checked to agree.
PostgreSQL: --pg-url, else a throwaway server from tests/servers.py. A database
made in a --pg-url server is kept (its URL is printed): --pg-db URL reruns the
monitors on it without loading again (pass the same --rows/--rows-total).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

NOW = 1_800_000_000.0
DAY = 86400.0
CLASSES = [f"c{i}" for i in range(10)]
WEIGHTS = np.array([30, 20, 12, 10, 8, 6, 5, 4, 3, 2], float) / 100
SHIFTED = np.array([25, 22, 12, 10, 9, 6, 5, 4, 4, 3], float) / 100
REGIONS = ["eu", "us", "apac", "latam"]
DEVICES = ["ios", "android", "web"]
COLUMNS = [
    "model", "model_version", "request_id", "ts", "prediction", "score_pred", "score_max",
    "entropy", "latency_seconds", "status", "slices", "schema_version", "label", "label_ts",
    "digest", "ingested_at",
]
VALIDATION_N = 100_000
ROOT = Path(__file__).resolve().parent.parent


def model_config() -> dict:
    return {
        "models": {
            "bench": {
                "task": "multiclass",
                "positive_class": "c0",
                "classes": CLASSES,
                "slices": ["region", "device"],
                "windows": ["5m", "1h", "1d"],
                "min_samples": 100,
                "min_labels": 100,
                "slos": [
                    {"name": "fast", "kind": "latency", "objective": 0.99, "threshold": "300ms"},
                    {"name": "errors", "kind": "error_rate", "objective": 0.999},
                ],
            }
        },
        "monitors": {"discover_models": False},
    }


def chunks(n: int, start: float, end: float, seed: int, prefix: str, size: int = 200_000):
    """Column arrays of synthetic predictions, in chunks (vectorised)."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        k = min(size, n - done)
        pred_i = rng.choice(10, size=k, p=SHIFTED)
        label_i = np.where(rng.random(k) < 0.8, pred_i, rng.choice(10, size=k, p=WEIGHTS))
        labelled = rng.random(k) < 0.5
        # Rows arrive in time order, as from ingest: chunk i covers the i-th slice of [start, end).
        lo, hi = start + (end - start) * done / n, start + (end - start) * (done + k) / n
        ts = np.sort(rng.uniform(lo, hi, size=k))
        conf = rng.uniform(0.2, 1.0, size=k)
        region = rng.choice(len(REGIONS), size=k, p=[0.4, 0.35, 0.2, 0.05])
        device = rng.choice(len(DEVICES), size=k)
        err = rng.random(k) < 0.01
        cols = {
            "model": ["bench"] * k,
            "model_version": ["v1"] * k,
            "request_id": [f"{prefix}{done + i}" for i in range(k)],
            "ts": ts,
            "prediction": [CLASSES[i] for i in pred_i],
            "score_pred": conf,
            "score_max": conf,
            "entropy": rng.uniform(0.1, 2.0, size=k),
            "latency_seconds": rng.lognormal(-2.3, 0.6, size=k),
            "status": np.where(err, "error", "ok").tolist(),
            "slices": [f'{{"region": "{REGIONS[r]}", "device": "{DEVICES[d]}"}}' for r, d in zip(region, device, strict=True)],
            "schema_version": [1] * k,
            "label": [CLASSES[i] if lab else None for i, lab in zip(label_i, labelled, strict=True)],
            "label_ts": np.where(labelled, ts + 120.0, np.nan),
            "digest": ["0" * 32] * k,
            "ingested_at": ts,
        }
        done += k
        yield k, cols


def load(url: str, rows: int, rows_total: int) -> float:
    """Create the store and fill it; returns seconds spent."""
    from modelmon.store.engine import make_engine
    from modelmon.store.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine)
    t0 = time.perf_counter()
    parts = [(rows, NOW - DAY, NOW, 1, "w")]
    if rows_total > rows:
        parts.insert(0, (rows_total - rows, NOW - 28 * DAY, NOW - DAY, 2, "h"))
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        cur = raw.cursor()
        sql = f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        for n, start, end, seed, prefix in parts:
            for k, cols in chunks(n, start, end, seed, prefix):
                lts = [None if math.isnan(x) else x for x in cols["label_ts"].tolist()]
                cols = {**cols, "label_ts": lts}
                data = [c.tolist() if isinstance(c, np.ndarray) else c for c in (cols[name] for name in COLUMNS)]
                cur.executemany(sql, list(zip(*data, strict=True)))
                print(f"  loaded {k} rows", end="\r", file=sys.stderr)
        raw.commit()
        raw.close()
    else:
        import pandas as pd

        raw = engine.raw_connection()
        cur = raw.cursor()
        for n, start, end, seed, prefix in parts:
            for _, cols in chunks(n, start, end, seed, prefix):
                buf = io.StringIO()
                pd.DataFrame(cols, columns=COLUMNS).to_csv(buf, sep="\t", header=False, index=False, na_rep="\\N", quoting=3)
                with cur.copy(f"COPY predictions ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    copy.write(buf.getvalue())
        raw.commit()
        # As autovacuum would leave it: statistics, hint bits and visibility map set,
        # so the first monitors pass does not pay for writing hint bits of fresh rows.
        raw.driver_connection.autocommit = True
        cur.execute("VACUUM ANALYZE predictions")
        raw.close()
    # The research baseline: class shares of a validation sample (the same sample evidently gets).
    validation = validation_sample()
    from modelmon.monitors.baselines import store_baseline
    from modelmon.monitors.stats_shift import shares_from_counts

    counts = {c: int((validation == c).sum()) for c in CLASSES}
    with engine.begin() as conn:
        store_baseline(conn, "bench", "predictions", shares_from_counts(counts), VALIDATION_N, "bench", NOW - 30 * DAY)
        store_baseline(conn, "bench", "labels", shares_from_counts(counts), VALIDATION_N, "bench", NOW - 30 * DAY)
    engine.dispose()
    return time.perf_counter() - t0


def validation_sample() -> np.ndarray:
    rng = np.random.default_rng(99)
    return np.array(CLASSES)[rng.choice(10, size=VALIDATION_N, p=WEIGHTS)]


# -- children (run in their own process so their peak RSS is theirs alone) -------------


def peak_rss_mb() -> float:
    """High-water RSS of this process's address space since its exec (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child_load(url: str, rows: int, rows_total: int) -> None:
    print(json.dumps({"load": load(url, rows, rows_total), "rss": peak_rss_mb()}))


def child_monitors(url: str) -> None:
    from modelmon.config import Config
    from modelmon.monitors.results import latest_results
    from modelmon.monitors.scheduler import MonitorScheduler
    from modelmon.store.engine import make_engine

    engine = make_engine(url)
    sched = MonitorScheduler(Config.model_validate(model_config()), engine)
    families = sched.available_families()
    times = {}
    t0 = time.perf_counter()
    outcomes = {}
    for fam in families:
        t = time.perf_counter()
        outcomes[fam] = sched.run_job(fam, "bench", NOW)
        times[fam] = time.perf_counter() - t
    total = time.perf_counter() - t0
    with engine.connect() as conn:
        res = latest_results(conn, "bench")
    pick = {}
    for r in res:
        if r["window"] == "1d" and r["labels"].get("baseline") == "research" and r["metric"] in ("class_shift_psi", "class_shift_js_distance"):
            pick[r["metric"]] = r["value"]
    print(json.dumps({"families": families, "outcomes": outcomes, "times": times, "total": total, "shift": pick,
                      "rss": peak_rss_mb()}))


def child_evidently(url: str) -> None:
    t0 = time.perf_counter()
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    import_s = time.perf_counter() - t0
    from modelmon.store.engine import make_engine

    engine = make_engine(url)
    t1 = time.perf_counter()
    with engine.connect() as conn:
        import sqlalchemy as sa

        cur = pd.read_sql_query(
            sa.text(f"SELECT prediction FROM predictions WHERE model = 'bench' AND ts >= {NOW - DAY!r} AND ts < {NOW!r}"), conn
        )
    load_s = time.perf_counter() - t1
    ref = pd.DataFrame({"prediction": validation_sample()})
    dd = DataDefinition(categorical_columns=["prediction"])
    t2 = time.perf_counter()
    report = Report([ValueDrift(column="prediction", method="psi"), ValueDrift(column="prediction", method="jensenshannon")])
    snap = report.run(
        current_data=Dataset.from_pandas(cur, data_definition=dd),
        reference_data=Dataset.from_pandas(ref, data_definition=dd),
    )
    values = [m["value"] for m in json.loads(snap.json())["metrics"]]
    report_s = time.perf_counter() - t2
    print(json.dumps({"import": import_s, "load": load_s, "report": report_s, "psi": values[0],
                      "js_e": values[1], "rows": len(cur), "rss": peak_rss_mb()}))


def run_child(kind: str, *args: object) -> tuple[dict, float]:
    """Run a child; returns its JSON output and its own peak RSS in MB (VmHWM)."""
    call = f"child_{kind}({', '.join(repr(a) for a in args)})"
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.monitors import child_{kind}; {call}"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, _usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed (exit {proc.returncode})")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return result, result["rss"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench monitors", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="predictions in the 1-day window")
    ap.add_argument("--rows-total", type=int, default=None, help="predictions in the table (default --rows)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--pg-url", default=None, help="a PostgreSQL server URL (a database is created in it)")
    ap.add_argument("--pg-db", default=None,
                    help="a database loaded by an earlier --pg-url run (URL printed then): no create, no load")
    ap.add_argument("--no-evidently", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="monitors passes (each a fresh process); the table shows the fastest, the first is printed too")
    args = ap.parse_args(argv)
    total = max(args.rows_total or args.rows, args.rows)
    results = []
    server = None
    tmp = Path(tempfile.mkdtemp(prefix="modelmon-bench-"))
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                url = f"sqlite:///{tmp}/bench.db"
            elif args.pg_db:
                url = args.pg_db
            else:
                url, server = pg_database(args.pg_url, server)
            if backend != "sqlite" and args.pg_db:
                print(f"[{backend}] reusing {url} (not loaded again); running the monitors ...", file=sys.stderr)
            else:
                if backend != "sqlite" and args.pg_url:
                    print(f"[{backend}] database (kept; rerun with --pg-db): {url}", file=sys.stderr)
                print(f"[{backend}] loading {total:,} rows ({args.rows:,} in the window) ...", file=sys.stderr)
                load_s = run_child("load", url, args.rows, total)[0]["load"]
                print(f"[{backend}] loaded in {load_s:.1f}s; running the monitors ...", file=sys.stderr)
            passes = [run_child("monitors", url) for _ in range(max(1, args.repeat))]
            mon, mon_rss = min(passes, key=lambda p: p[0]["total"])
            if len(passes) > 1:
                times = ", ".join(f"{p[0]['total']:.2f}" for p in passes)
                print(f"[{backend}] monitors passes (s): {times}", file=sys.stderr)
            ev, ev_rss = (None, None) if args.no_evidently else run_child("evidently", url)
            results.append((backend, mon, mon_rss, ev, ev_rss))
    finally:
        if server is not None:
            server.cleanup()
        for p in tmp.glob("*"):
            p.unlink()
        tmp.rmdir()
    print_table(results, args.rows, total)
    return 0


def pg_database(url: str | None, server):  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    name = f"modelmon_bench_{uuid.uuid4().hex[:8]}"
    if url is None:
        sys.path.insert(0, str(ROOT / "tests"))
        import servers  # type: ignore[import-not-found]

        server = server or servers.start_postgres()
        url = server.url("postgres")
    from modelmon.store.engine import make_engine

    admin = make_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return str(sa.make_url(url).set(database=name).render_as_string(hide_password=False)), server


def print_table(results, rows: int, total: int) -> None:
    print(f"\nAll monitor families, one pass, {rows:,} predictions in the 1d window, {total:,} in the table")
    head = ["store", "families", "monitors s", "peak RSS MB", "evidently report s",
            "evidently load+report s", "monitors/evidently", "PSI ours", "PSI evidently", "JS ours (base 2)",
            "JS evidently (->base 2)"]
    lines = [head]
    for backend, mon, mon_rss, ev, _ev_rss in results:
        js_e2 = None if ev is None else ev["js_e"] / math.sqrt(math.log(2))
        lines.append([
            backend, str(len(mon["families"])), f"{mon['total']:.2f}", f"{mon_rss:.0f}",
            "-" if ev is None else f"{ev['report']:.2f}",
            "-" if ev is None else f"{ev['load'] + ev['report']:.2f}",
            "-" if ev is None else f"{mon['total'] / ev['report']:.2f}x",
            f"{mon['shift'].get('class_shift_psi', float('nan')):.10f}",
            "-" if ev is None else f"{ev['psi']:.10f}",
            f"{mon['shift'].get('class_shift_js_distance', float('nan')):.10f}",
            "-" if js_e2 is None else f"{js_e2:.10f}",
        ])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    for i, r in enumerate(lines):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\nper family (s; a tick's families share scans, the first to need one pays for it): " + "; ".join(
        f"{b}: " + ", ".join(f"{f} {t:.2f}" for f, t in m["times"].items()) for b, m, *_ in results))
    for b, m, *_ in results:
        bad = {f: o for f, o in m["outcomes"].items() if o != "ok"}
        if bad:
            print(f"{b}: families not ok: {bad}")
    for b, _m, _r, ev, ev_rss in results:
        if ev is not None:
            print(f"{b}: evidently import {ev['import']:.1f}s, load {ev['rows']:,} rows {ev['load']:.2f}s, peak RSS {ev_rss:.0f} MB")
