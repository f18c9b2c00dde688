"""Benchmark: feature drift + data quality of one window, beside evidently on the whole window.

    python -m bench features [--events 1000000] [--reference-rows 50000] [--repeat 2]
                             [--no-evidently] [--keep DIR]

One SQLite store (bulk-loaded, see `load`): one model with 50 features (40 numeric,
10 categorical) on every prediction, `--events` predictions in the 1-day window
before a minute-aligned NOW, and a stored reference of `--reference-rows` rows of
the same distributions. The window has an incident in three features (one
numeric shifted by 0.5 standard deviations, a new category in a categorical one,
another numeric missing in 20% of rows), so both sides find something.

Measured in the same run, each in its own fresh process (peak RSS = its own VmHWM):
  evidently  DataDriftPreset on the whole window (read into pandas, not counted)
             against the reference: the report's time;
  modelmon   the `feature_drift` and `data_quality` families for the window, as the
             feature worker computes them (modelmon.monitors.features.compute: reference
             read and prepared, window sample of `features.sample_rows` rows, both
             families); before it, the store reads alone: `load_reference` and
             `sample_window` (+ the window's counts).
Targets: modelmon <= 0.2x evidently's report time; the worker's peak RSS <= 500 MB.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._store import DAY, NOW
from bench.monitors import peak_rss_mb

ROOT = Path(__file__).resolve().parent.parent

MODEL = "bench"
NUMERIC = [f"num{i:02d}" for i in range(40)]
CATEGORICAL = [f"cat{i:02d}" for i in range(10)]
SHIFTED, NEW_CATEGORY, GOES_MISSING = "num00", "cat00", "num01"
RATIO_TARGET = 0.2
RSS_TARGET_MB = 500.0
COLUMNS = [
    "model", "model_version", "request_id", "ts", "prediction", "status", "features",
    "schema_version", "digest", "ingested_at",
]


def config_dict() -> dict[str, Any]:
    """One model, the feature families over the 1-day window only (the one measured)."""
    return {"models": {MODEL: {"task": "multiclass", "classes": ["a", "b", "c"], "windows": ["1d"]}},
            "monitors": {"discover_models": False}, "features": {"windows": ["1d"]}}


# -- data ---------------------------------------------------------------------------------


def _categories(i: int) -> tuple[list[str], np.ndarray]:
    k = 6 + i  # 6..15 categories, Zipf-like shares
    weights = 1.0 / np.arange(1, k + 1)
    return [f"c{i}_{j}" for j in range(k)], weights / weights.sum()


def feature_columns(n: int, rng: np.random.Generator, incident: bool) -> dict[str, list[Any]]:
    """n rows of the 50 features as Python values (None = missing)."""
    cols: dict[str, list[Any]] = {}
    for i, name in enumerate(NUMERIC):
        mu, sd = float(i), 1.0 + i / 10
        x = rng.normal(mu, sd, n)
        if incident and name == SHIFTED:
            x += 0.5 * sd
        values = np.round(x, 5).tolist()
        if incident and name == GOES_MISSING:
            for j in np.flatnonzero(rng.random(n) < 0.2).tolist():
                values[j] = None
        cols[name] = values
    for i, name in enumerate(CATEGORICAL):
        cats, p = _categories(i)
        values = np.array(cats)[rng.choice(len(cats), n, p=p)].tolist()
        if incident and name == NEW_CATEGORY:
            for j in np.flatnonzero(rng.random(n) < 0.05).tolist():
                values[j] = "never_seen"
        cols[name] = values
    return cols


def _digests(rng: np.random.Generator, n: int) -> list[str]:
    """Uniform 128-bit hex digests (as SHA-256 prefixes are)."""
    words = rng.integers(0, 2**63, size=(n, 2), dtype=np.int64)
    return [f"{a:016x}{b:016x}" for a, b in words.tolist()]


def insert_window(engine: Any, events: int, chunk: int = 50_000) -> None:
    """Bulk-insert `events` predictions with features in [NOW - DAY, NOW) (executemany)."""
    rng = np.random.default_rng(7)
    names = NUMERIC + CATEGORICAL
    sql = f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    raw = engine.raw_connection()
    cur = raw.cursor()
    done = 0
    while done < events:
        k = min(chunk, events - done)
        ts = np.sort(rng.uniform(NOW - DAY + DAY * done / events, NOW - DAY + DAY * (done + k) / events, k))
        cols = feature_columns(k, rng, incident=True)
        rows = [dict(zip(names, vals, strict=True)) for vals in zip(*(cols[c] for c in names), strict=True)]
        preds = np.array(["a", "b", "c"])[rng.choice(3, k, p=[0.5, 0.3, 0.2])].tolist()
        data = zip(
            [MODEL] * k, ["v1"] * k, [f"r{done + i}" for i in range(k)], ts.tolist(), preds, ["ok"] * k,
            [json.dumps(r, separators=(",", ":")) for r in rows], [1] * k, _digests(rng, k), ts.tolist(),
            strict=True,
        )
        cur.executemany(sql, list(data))
        done += k
    raw.commit()
    raw.close()


def reference(rows: int) -> Any:
    from modelmon.store.features import FeatureReference

    rng = np.random.default_rng(11)
    preds = np.array(["a", "b", "c"])[rng.choice(3, rows, p=[0.5, 0.3, 0.2])].tolist()
    return FeatureReference(MODEL, feature_columns(rows, rng, incident=False), preds, None,
                            "bench-validation.parquet", rows, NOW - 30 * DAY)


def child_load(url: str, events: int, reference_rows: int) -> None:
    from modelmon.config import Config
    from modelmon.store.engine import make_engine
    from modelmon.store.features import set_reference
    from modelmon.store.migrate import upgrade

    engine = make_engine(url)
    upgrade(engine, cfg=Config.model_validate(config_dict()))
    t0 = time.perf_counter()
    insert_window(engine, events)
    insert_s = time.perf_counter() - t0
    with engine.begin() as conn:
        set_reference(conn, MODEL, reference(reference_rows))
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        size = conn.exec_driver_sql("SELECT page_count * page_size FROM pragma_page_count(), "
                                    "pragma_page_size()").scalar_one()
    engine.dispose()
    print(json.dumps({"insert_s": insert_s, "db_mb": size / 1e6, "rss": peak_rss_mb()}))


# -- the measured children ----------------------------------------------------------------


def child_modelmon(url: str) -> None:
    """The store reads alone, then both families as the worker computes them."""
    t0 = time.perf_counter()
    from modelmon.config import Config
    from modelmon.monitors import features
    from modelmon.monitors.feature_worker import feature_windows
    from modelmon.store.engine import make_engine
    from modelmon.store.features import load_reference, sample_window

    import_s = time.perf_counter() - t0
    cfg = Config.model_validate(config_dict())
    model = cfg.model(MODEL)
    (window,) = feature_windows(model, cfg.features, NOW)
    engine = make_engine(url)
    with engine.connect() as conn:
        t = time.perf_counter()
        ref = load_reference(conn, MODEL)
        ref_s = time.perf_counter() - t
        t = time.perf_counter()
        sample = sample_window(conn, MODEL, window.start, window.end, cfg.features.sample_rows)
        sample_s = time.perf_counter() - t
        ref_rows, sample_rows, with_features, total = ref.rows, sample.rows, sample.with_features, sample.total
        del ref, sample
        t = time.perf_counter()
        out = features.compute(conn, model, NOW, cfg.features)
        compute_s = time.perf_counter() - t
    engine.dispose()
    detected = sorted(w.row.labels.get("feature", "") for w in out[features.DRIFT]
                      if w.row.metric == "feature_drift_detected" and w.row.value == 1)
    print(json.dumps({
        "import": import_s, "load_reference": ref_s, "sample_window": sample_s, "compute": compute_s,
        "reference_rows": ref_rows, "sample_rows": sample_rows, "with_features": with_features,
        "total": total, "rows": {k: len(v) for k, v in out.items()}, "detected": detected,
        "rss": peak_rss_mb(),
    }))


def _window_frame(url: str) -> Any:
    """The whole window's features as a DataFrame (what a user of evidently would load)."""
    import pandas as pd
    import sqlalchemy as sa

    from modelmon.store.engine import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        texts = conn.execute(sa.text(
            "SELECT features FROM predictions WHERE model = :m AND ts >= :s AND ts < :e "
            "AND features IS NOT NULL"), {"m": MODEL, "s": NOW - DAY, "e": NOW}).scalars().all()
    engine.dispose()
    frame = pd.DataFrame.from_records([json.loads(t) for t in texts], columns=NUMERIC + CATEGORICAL)
    return frame


def child_evidently(url: str) -> None:
    t0 = time.perf_counter()
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from modelmon.store.engine import make_engine
    from modelmon.store.features import load_reference

    import_s = time.perf_counter() - t0
    t = time.perf_counter()
    current = _window_frame(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        ref = load_reference(conn, MODEL)
    engine.dispose()
    reference_frame = pd.DataFrame(ref.columns, columns=NUMERIC + CATEGORICAL)
    load_s = time.perf_counter() - t
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    t = time.perf_counter()
    snapshot = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference_frame, data_definition=definition),
    )
    result = json.loads(snapshot.json())
    report_s = time.perf_counter() - t
    detected = sorted(
        m["config"]["column"] for m in result["metrics"]
        if m["config"].get("type", "").endswith("ValueDrift") and _drifted(m)
    )
    print(json.dumps({"import": import_s, "load": load_s, "report": report_s, "rows": len(current),
                      "detected": detected, "rss": peak_rss_mb()}))


def _drifted(metric: dict[str, Any]) -> bool:
    """evidently's ValueDrift result: drift when the score crosses its threshold
    (p-values below it, distances at or above it)."""
    value, threshold = metric["value"], metric["config"].get("threshold")
    method = str(metric["config"].get("method", ""))
    if threshold is None or value is None:
        return False
    return value < threshold if "p_value" in method or "test" in method.lower() else value >= threshold


# -- the run ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench features", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000, help="predictions in the 1d window")
    ap.add_argument("--reference-rows", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=2, help="modelmon runs (fresh processes); fastest shown")
    ap.add_argument("--no-evidently", action="store_true")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep (or reuse, if it holds one) the store in this directory")
    args = ap.parse_args(argv)
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="modelmon-bench-features-"))
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"features-{args.events}-{args.reference_rows}.db"
    url = f"sqlite:///{path}"
    try:
        loaded = None
        if not path.exists():
            print(f"loading {args.events:,} predictions with 50 features ...", flush=True)
            loaded = run_child("load", url, args.events, args.reference_rows)
            print(f"  inserted in {loaded['insert_s']:.0f} s, store {loaded['db_mb']:.0f} MB", flush=True)
        runs = [run_child("modelmon", url) for _ in range(max(1, args.repeat))]
        ours = min(runs, key=lambda r: r["compute"])
        ev = None if args.no_evidently else run_child("evidently", url)
        print_table(args, ours, ev, loaded)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def run_child(kind: str, *args: object) -> dict[str, Any]:
    """`child_<kind>(*args)` of this module in a fresh interpreter; the JSON it prints last."""
    call = f"child_{kind}({', '.join(repr(a) for a in args)})"
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.features import child_{kind}; {call}"
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed (exit {proc.returncode})")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def print_table(args: argparse.Namespace, ours: dict[str, Any], ev: dict[str, Any] | None,
                loaded: dict[str, Any] | None) -> None:
    print(f"\nFeature drift + data quality, 1 model x 50 features (40 numeric, 10 categorical), "
          f"{ours['total']:,} predictions in the 1d window, reference {ours['reference_rows']:,} rows")
    head = ["run", "rows compared", "time s", "peak RSS MB", "vs evidently", "target", "met"]
    lines = [head]
    ratio = None if ev is None else ours["compute"] / ev["report"]
    lines.append(["modelmon: both families (worker)", f"{ours['sample_rows']:,} sample vs ref",
                  f"{ours['compute']:.2f}", f"{ours['rss']:.0f}",
                  "-" if ratio is None else f"{ratio:.3f}x", f"<= {RATIO_TARGET}x, <= {RSS_TARGET_MB:.0f} MB",
                  ("-" if ratio is None else ("yes" if ratio <= RATIO_TARGET else "NO"))
                  + ("" if ours["rss"] <= RSS_TARGET_MB else " (RSS NO)")])
    lines.append(["  of which load_reference", f"{ours['reference_rows']:,} x 50", f"{ours['load_reference']:.3f}",
                  "", "", "< 1 s", "yes" if ours["load_reference"] < 1 else "NO"])
    lines.append(["  of which sample_window", f"{ours['sample_rows']:,} of {ours['with_features']:,}",
                  f"{ours['sample_window']:.3f}", "", "", "", ""])
    if ev is not None:
        lines.append(["evidently DataDriftPreset, whole window", f"{ev['rows']:,} vs ref", f"{ev['report']:.2f}",
                      f"{ev['rss']:.0f}", "1x", "", ""])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    for i, row in enumerate(lines):
        print("  ".join(c.ljust(w) if j in (0, 1, 5) else c.rjust(w)
                        for j, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"modelmon: imports {ours['import']:.1f} s (not counted); rows out {ours['rows']}; "
          f"drift detected in {ours['detected']}")
    if ev is not None:
        print(f"evidently: import {ev['import']:.1f} s, reading the window and reference into pandas "
              f"{ev['load']:.1f} s (not counted); drift detected in {ev['detected']}")
    if loaded:
        print(f"store: {loaded['db_mb']:.0f} MB, bulk insert {loaded['insert_s']:.0f} s")
    print(f"incident: {SHIFTED} +0.5 sd, {NEW_CATEGORY} 5% new category, {GOES_MISSING} 20% missing")
    if not math.isfinite(ours["compute"]):
        raise SystemExit("modelmon run failed")
