"""Synthetic stores for `bench monitors`: raw rows bulk-loaded, then rollups rebuilt.

The monitors read rollups only, so a benchmark store must hold the rollups
ingest would have written for its rows. Counting them through `write_batch`
would time ingest, not the monitors; instead the raw rows are bulk-inserted
(executemany on SQLite, COPY on PostgreSQL) and the rollups are built with
`modelmon.store.rebuild.rebuild`, which streams the raw rows through the same
counting code (`rollups.Delta.add_prediction`) as write time. Its rate is
reported, since it is also what `modelmon rollups rebuild` costs.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

# Minute-aligned: windows end at floor(now / rollups.fine) * rollups.fine, so the
# monitors' 1-day window is exactly [NOW - DAY, NOW), the span evidently reads.
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


def model_settings() -> dict[str, Any]:
    return {
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


def config_dict(models: Sequence[str]) -> dict[str, Any]:
    """The configuration of the loading, the monitors and the rebuild (one for all)."""
    return {"models": {m: model_settings() for m in models}, "monitors": {"discover_models": False}}


def fleet_models(n: int) -> list[str]:
    return [f"fleet-{i:03d}" for i in range(n)]


def chunks(
    model: str, n: int, start: float, end: float, seed: int, size: int = 200_000
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Column arrays of synthetic predictions in time order (as from ingest), vectorised.

    10 classes, labels for half (120 s after the prediction), 2 slice
    attributes, lognormal latencies, 1% errors.
    """
    rng = np.random.default_rng(seed)
    done = 0
    while done < n:
        k = min(size, n - done)
        pred_i = rng.choice(10, size=k, p=SHIFTED)
        label_i = np.where(rng.random(k) < 0.8, pred_i, rng.choice(10, size=k, p=WEIGHTS))
        labelled = rng.random(k) < 0.5
        lo, hi = start + (end - start) * done / n, start + (end - start) * (done + k) / n
        ts = np.sort(rng.uniform(lo, hi, size=k))
        conf = rng.uniform(0.2, 1.0, size=k)
        region = rng.choice(len(REGIONS), size=k, p=[0.4, 0.35, 0.2, 0.05])
        device = rng.choice(len(DEVICES), size=k)
        err = rng.random(k) < 0.01
        cols = {
            "model": [model] * k,
            "model_version": ["v1"] * k,
            "request_id": [f"{model}-{done + i}" for i in range(k)],
            "ts": ts,
            "prediction": [CLASSES[i] for i in pred_i],
            "score_pred": conf,
            "score_max": conf,
            "entropy": rng.uniform(0.1, 2.0, size=k),
            "latency_seconds": rng.lognormal(-2.3, 0.6, size=k),
            "status": np.where(err, "error", "ok").tolist(),
            "slices": [
                f'{{"region": "{REGIONS[r]}", "device": "{DEVICES[d]}"}}'
                for r, d in zip(region, device, strict=True)
            ],
            "schema_version": [1] * k,
            "label": [CLASSES[i] if lab else None for i, lab in zip(label_i, labelled, strict=True)],
            "label_ts": np.where(labelled, ts + 120.0, np.nan),
            "digest": ["0" * 32] * k,
            "ingested_at": ts,
        }
        done += k
        yield k, cols


def validation_sample() -> np.ndarray:
    """The research baseline's validation sample (evidently gets the same one)."""
    rng = np.random.default_rng(99)
    return np.array(CLASSES)[rng.choice(10, size=VALIDATION_N, p=WEIGHTS)]


def insert_raw(engine: Any, models: Sequence[str], rows_per_model: int) -> int:
    """Bulk-insert each model's predictions in [NOW - DAY, NOW); returns rows inserted."""
    parts = [(m, rows_per_model, NOW - DAY, NOW, 1 + i) for i, m in enumerate(models)]
    total = 0
    raw = engine.raw_connection()
    cur = raw.cursor()
    if engine.dialect.name == "sqlite":
        sql = f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        for model, n, start, end, seed in parts:
            for k, cols in chunks(model, n, start, end, seed):
                lts = [None if math.isnan(x) else x for x in cols["label_ts"].tolist()]
                cols = {**cols, "label_ts": lts}
                data = [c.tolist() if isinstance(c, np.ndarray) else c for c in (cols[name] for name in COLUMNS)]
                cur.executemany(sql, list(zip(*data, strict=True)))
                total += k
    else:
        import pandas as pd

        for model, n, start, end, seed in parts:
            for k, cols in chunks(model, n, start, end, seed):
                buf = io.StringIO()
                pd.DataFrame(cols, columns=COLUMNS).to_csv(
                    buf, sep="\t", header=False, index=False, na_rep="\\N", quoting=3
                )
                with cur.copy(f"COPY predictions ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    copy.write(buf.getvalue())
                total += k
    raw.commit()
    raw.close()
    if engine.dialect.name == "postgresql":
        # As autovacuum would leave it (statistics, hint bits, visibility map), so
        # neither the rebuild nor the pass pays for the first touch of fresh rows.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE predictions")
    return total


def build_rollups(engine: Any, cfg: Any, models: Sequence[str]) -> tuple[float, int]:
    """`rebuild` every model's rollups from its raw rows: (seconds, rows counted)."""
    from modelmon.store.rebuild import rebuild
    from modelmon.store.rollups import Specs

    specs = Specs(cfg)
    t0 = time.perf_counter()
    rows = 0
    for model in models:
        rows += rebuild(engine, specs, model).rows
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - t0, rows


def store_baselines(engine: Any, models: Sequence[str]) -> None:
    """Research baselines: class shares of the validation sample, for predictions and labels."""
    from modelmon.monitors.baselines import store_baseline
    from modelmon.monitors.stats_shift import shares_from_counts

    validation = validation_sample()
    shares = shares_from_counts({c: int((validation == c).sum()) for c in CLASSES})
    with engine.begin() as conn:
        for m in models:
            for kind in ("predictions", "labels"):
                store_baseline(conn, m, kind, shares, VALIDATION_N, "bench", NOW - 30 * DAY)  # type: ignore[arg-type]


def load(url: str, models: Sequence[str], rows_per_model: int) -> dict[str, float]:
    """Create the store and fill it: raw rows, baselines, rollups; timings."""
    from modelmon.config import Config
    from modelmon.store.engine import make_engine
    from modelmon.store.migrate import upgrade

    cfg = Config.model_validate(config_dict(models))
    engine = make_engine(url)
    upgrade(engine, cfg=cfg)
    t0 = time.perf_counter()
    rows = insert_raw(engine, models, rows_per_model)
    insert_s = time.perf_counter() - t0
    store_baselines(engine, models)
    rebuild_s, rebuilt = build_rollups(engine, cfg, models)
    engine.dispose()
    if rebuilt != rows:
        raise RuntimeError(f"rebuild counted {rebuilt} rows of {rows}")
    return {"rows": rows, "insert_s": insert_s, "rebuild_s": rebuild_s}
