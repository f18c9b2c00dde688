"""An independent oracle for the rollup tables: GROUP BYs over the raw predictions.

`assert_rollups_match_raw` reads `predictions` with plain SQL and recomputes
every rollup table with pandas from the definitions in
`modelmon.store.tables`, using the configuration directly (not
`modelmon.store.rollups`: a bug in the counting code must not be mirrored
here). Integers compare exactly, floats to 1e-9 relative. Rows whose counters
are all zero (a class cell whose predictions all moved to a label) count as
absent, on both sides.

Buckets are floor(ts / res) * res computed as Python's and numpy's floor
division (the exact floor, not the floor of a rounded quotient).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from ddsketch.mapping import LogarithmicMapping

from modelmon.config import Config
from modelmon.store.sketch import ZERO_KEY

MISSING = "__missing__"
OTHER = "__other__"
BUCKET = ["model", "res", "bucket", "model_version"]

#: table -> (key columns after BUCKET, integer counters, float sums, float maxima)
TABLES: dict[str, tuple[list[str], list[str], list[str], list[str]]] = {
    "rollup_requests": (
        [], ["n", "errors", "ok_latency", "n_max", "low", "n_ent", "n_conf"],
        ["sum_max", "sum_ent", "sum_conf"], ["last_ts"],
    ),
    "rollup_classes": (["prediction", "label"], ["n"], [], []),
    "rollup_calibration": (["bin"], ["n", "correct"], ["sum_conf"], []),
    "rollup_slices": (
        ["attribute", "value"],
        ["n", "selected", "labelled", "correct", "positives", "tp", "negatives", "fp"], [], [],
    ),
    "rollup_latency_good": (["threshold"], ["good"], [], []),
    "rollup_sketches": (["kind", "key"], ["n"], [], []),
}

Rows = dict[tuple[Any, ...], dict[str, Any]]


def raw_predictions(engine: sa.Engine, model: str | None = None) -> pd.DataFrame:
    """The raw rows the rollups count, slices decoded to dicts."""
    sql = (
        "SELECT model, model_version, ts, prediction, status, score_pred, score_max, entropy, "
        "latency_seconds, slices, label, label_ts FROM predictions"
    )
    params: dict[str, Any] = {}
    if model is not None:
        sql += " WHERE model = :model"
        params["model"] = model
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), params).all()
    df = pd.DataFrame([tuple(r) for r in rows], columns=[
        "model", "model_version", "ts", "prediction", "status", "score_pred", "score_max",
        "entropy", "latency_seconds", "slices", "label", "label_ts",
    ])
    df["slices"] = [json.loads(s) if isinstance(s, str) else s for s in df["slices"]]
    for c in ("ts", "score_pred", "score_max", "entropy", "latency_seconds", "label_ts"):
        df[c] = df[c].astype("float64")
    return df


def expected_rollups(
    df: pd.DataFrame, cfg: Config, admitted: Mapping[tuple[str, str], set[str]] | None = None
) -> dict[str, Rows]:
    """Every rollup table as {key: {column: value}}, from the raw rows.

    `admitted`: per (model, attribute), the slice values that have rows of their
    own (others expected pooled as __other__); None means every value (the
    caller asserts the cardinality is under rollups.slice_values_max).
    """
    out: dict[str, Rows] = {name: {} for name in TABLES}
    if df.empty:
        return out
    r = cfg.rollups
    settings = {m: cfg.model(m) for m in df["model"].unique()}
    for res in (int(r.fine), int(r.coarse)):
        d = df.copy()
        d["res"] = res
        d["bucket"] = (np.floor_divide(d["ts"].to_numpy(), res) * res).astype("int64")
        _requests(out["rollup_requests"], d, settings)
        ok = d[d["status"] == "ok"]
        _classes(out["rollup_classes"], ok)
        _calibration(out["rollup_calibration"], ok, settings)
        _slices(out["rollup_slices"], ok, settings, admitted)
        _latency_good(out["rollup_latency_good"], ok, settings)
        _sketches(out["rollup_sketches"], ok, r.sketch_relative_accuracy)
    return out


def _put(out: Rows, grouped: pd.DataFrame, keys: list[str]) -> None:
    for row in grouped.reset_index().to_dict("records"):
        key = tuple(_plain(row.pop(k)) for k in keys)
        assert key not in out, key
        out[key] = {k: _plain(v) for k, v in row.items()}


def _plain(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def _requests(out: Rows, d: pd.DataFrame, settings: dict[str, Any]) -> None:
    ok = d["status"] == "ok"
    lat, smax = d["latency_seconds"], d["score_max"]
    ent, conf = d["entropy"], d["score_pred"]
    thr = d["model"].map({m: s.confidence_threshold for m, s in settings.items()})
    has_max = ok & smax.notna()
    cols = pd.DataFrame({
        **{k: d[k] for k in BUCKET},
        "n": 1,
        "errors": (~ok).astype(int),
        "ok_latency": (ok & lat.notna()).astype(int),
        "n_max": has_max.astype(int),
        "sum_max": smax.where(has_max, 0.0),
        "low": (has_max & (smax < thr)).astype(int),
        "n_ent": (ok & ent.notna()).astype(int),
        "sum_ent": ent.where(ok & ent.notna(), 0.0),
        "n_conf": (ok & conf.notna()).astype(int),
        "sum_conf": conf.where(ok & conf.notna(), 0.0),
        "last_ts": d["ts"],
    })
    agg = {c: "sum" for c in cols.columns if c not in BUCKET}
    agg["last_ts"] = "max"
    _put(out, cols.groupby(BUCKET).agg(agg), BUCKET)


def _classes(out: Rows, ok: pd.DataFrame) -> None:
    cols = ok[BUCKET + ["prediction"]].assign(label=ok["label"].fillna(""), n=1)
    keys = BUCKET + ["prediction", "label"]
    _put(out, cols.groupby(keys)[["n"]].sum(), keys)


def _calibration(out: Rows, ok: pd.DataFrame, settings: dict[str, Any]) -> None:
    lab = ok[ok["label"].notna() & ok["score_pred"].notna()]
    if lab.empty:
        return
    bins = lab["model"].map({m: s.calibration_bins for m, s in settings.items()})
    b = np.minimum(np.floor(lab["score_pred"] * bins), bins - 1).astype(int)
    cols = lab[BUCKET].assign(
        bin=b, n=1, sum_conf=lab["score_pred"],
        correct=(lab["label"] == lab["prediction"]).astype(int),
    )
    keys = BUCKET + ["bin"]
    _put(out, cols.groupby(keys)[["n", "sum_conf", "correct"]].sum(), keys)


def _slices(
    out: Rows, ok: pd.DataFrame, settings: dict[str, Any],
    admitted: Mapping[tuple[str, str], set[str]] | None,
) -> None:
    frames = []
    for model, s in settings.items():
        if s.positive_class is None or not s.slices:
            continue
        m = ok[ok["model"] == model]
        if m.empty:
            continue
        pos = s.positive_class
        labelled = m["label"].notna()
        selected = m["prediction"] == pos
        positive = labelled & (m["label"] == pos)
        negative = labelled & (m["label"] != pos)
        for attr in s.slices:
            raw = [None if sl is None else sl.get(attr) for sl in m["slices"]]
            values = [MISSING if v is None else str(v) for v in raw]
            if admitted is not None:
                keep = admitted.get((model, attr), set())
                values = [v if v in (MISSING,) or v in keep else OTHER for v in values]
            frames.append(m[BUCKET].assign(
                attribute=attr, value=values, n=1,
                selected=selected.astype(int),
                labelled=labelled.astype(int),
                correct=(labelled & (m["label"] == m["prediction"])).astype(int),
                positives=positive.astype(int),
                tp=(positive & selected).astype(int),
                negatives=negative.astype(int),
                fp=(negative & selected).astype(int),
            ))
    if not frames:
        return
    cols = pd.concat(frames)
    keys = BUCKET + ["attribute", "value"]
    _put(out, cols.groupby(keys)[TABLES["rollup_slices"][1]].sum(), keys)


def _latency_good(out: Rows, ok: pd.DataFrame, settings: dict[str, Any]) -> None:
    frames = []
    has = ok[ok["latency_seconds"].notna()]
    for model, s in settings.items():
        m = has[has["model"] == model]
        for t in sorted({slo.threshold for slo in s.slos if slo.threshold is not None}):
            good = m[m["latency_seconds"] <= t]
            frames.append(good[BUCKET].assign(threshold=float(t), good=1))
    frames = [f for f in frames if not f.empty]
    if not frames:
        return
    keys = BUCKET + ["threshold"]
    _put(out, pd.concat(frames).groupby(keys)[["good"]].sum(), keys)


def _sketches(out: Rows, ok: pd.DataFrame, accuracy: float) -> None:
    mapping = LogarithmicMapping(accuracy)

    def key(x: float) -> int:
        return ZERO_KEY if x < 1e-9 else int(mapping.key(x))

    lat = ok[ok["latency_seconds"].notna()]
    lab = ok[ok["label"].notna() & ok["label_ts"].notna()]
    frames = [
        lat[BUCKET].assign(kind="latency", key=[key(x) for x in lat["latency_seconds"]], n=1),
        lab[BUCKET].assign(
            kind="delay", key=[key(max(0.0, a - b)) for a, b in zip(lab["label_ts"], lab["ts"], strict=True)],
            n=1,
        ),
    ]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return
    keys = BUCKET + ["kind", "key"]
    _put(out, pd.concat(frames).groupby(keys)[["n"]].sum(), keys)


def stored_rollups(engine: sa.Engine, model: str | None = None) -> dict[str, Rows]:
    """Every rollup table as {key: {column: value}}, rows with all-zero counters left out."""
    out: dict[str, Rows] = {}
    for name, (keys, ints, sums, maxima) in TABLES.items():
        cols = BUCKET + keys + ints + sums + maxima
        sql = f"SELECT {', '.join(_q(c) for c in cols)} FROM {name}"
        params: dict[str, Any] = {}
        if model is not None:
            sql += " WHERE model = :model"
            params["model"] = model
        with engine.connect() as conn:
            rows = conn.execute(sa.text(sql), params).all()
        table: Rows = {}
        for row in rows:
            rec = dict(zip(cols, row, strict=True))
            if all(rec[c] == 0 for c in ints):
                continue
            k = tuple(
                float(rec[c]) if c == "threshold" else int(rec[c]) if c in ("res", "bucket", "bin", "key") else rec[c]
                for c in BUCKET + keys
            )
            table[k] = {c: rec[c] for c in ints + sums + maxima}
        out[name] = table
    return out


def _q(column: str) -> str:
    return f'"{column}"'


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def diff_rollups(expected: dict[str, Rows], stored: dict[str, Rows], limit: int = 8) -> list[str]:
    """Human-readable differences (empty when they match)."""
    problems: list[str] = []
    for name, (_, ints, sums, maxima) in TABLES.items():
        want = {k: v for k, v in expected[name].items() if any(v[c] != 0 for c in ints)}
        got = stored[name]
        for k in sorted(want.keys() - got.keys(), key=repr)[:limit]:
            problems.append(f"{name}: missing {k} (expected {want[k]})")
        for k in sorted(got.keys() - want.keys(), key=repr)[:limit]:
            problems.append(f"{name}: unexpected {k} = {got[k]}")
        bad = [k for k in want.keys() & got.keys()
               if not all(_close(want[k][c], got[k][c]) for c in ints + sums + maxima)]
        for k in sorted(bad, key=repr)[:limit]:
            problems.append(f"{name}: {k} expected {want[k]}, stored {got[k]}")
    return problems


def assert_rollups_match_raw(
    engine: sa.Engine,
    cfg: Config,
    model: str | None = None,
    admitted: Mapping[tuple[str, str], set[str]] | None = None,
) -> dict[str, Rows]:
    """Every rollup table equals its GROUP BY over the raw predictions; returns the rows.

    Without `admitted`, every (model, slice attribute) must have at most
    rollups.slice_values_max distinct values (no __other__ pooling expected).
    """
    df = raw_predictions(engine, model)
    if admitted is None and not df.empty:
        for m in df["model"].unique():
            s = cfg.model(m)
            if s.positive_class is None:
                continue
            rows = df[df["model"] == m]["slices"]  # error rows take a value's place too
            for attr in s.slices:
                distinct = {str(sl[attr]) for sl in rows if sl and sl.get(attr) is not None}
                assert len(distinct) <= cfg.rollups.slice_values_max, (
                    f"{m}.{attr} has {len(distinct)} values, over rollups.slice_values_max:"
                    " pass `admitted`"
                )
    stored = stored_rollups(engine, model)
    problems = diff_rollups(expected_rollups(df, cfg, admitted), stored)
    assert not problems, "rollups differ from the raw predictions:\n  " + "\n  ".join(problems)
    return stored


# -- events and configuration shared by the rollup tests --------------------------------

T0 = 1_790_000_000.0  # not on an hour boundary: buckets straddle it

#: Model "m": binary with slices, a positive class and two latency SLOs; model "n":
#: the defaults (multiclass, no slices) with the default latency SLO.
ROLLUP_CONFIG: dict[str, Any] = {
    "rollups": {"fine": "60s", "coarse": "10m"},
    "defaults": {
        "windows": ["10m", "1h"],
        "slos": [{"name": "fast", "kind": "latency", "objective": 0.9, "threshold": "500ms"}],
    },
    "models": {
        "m": {
            "positive_class": "1",
            "slices": ["region", "sex"],
            "confidence_threshold": 0.7,
            "calibration_bins": 5,
            "slos": [
                {"name": "fast", "kind": "latency", "objective": 0.99, "threshold": "250ms"},
                {"name": "ok", "kind": "latency", "objective": 0.9, "threshold": "1s"},
                {"name": "errors", "kind": "error_rate", "objective": 0.99},
            ],
        },
    },
}


def rollup_config(**overrides: Any) -> Config:
    """ROLLUP_CONFIG with top-level sections replaced (e.g. models=...)."""
    return Config.model_validate({**ROLLUP_CONFIG, **overrides})


def prediction_obj(i: int, model: str = "m", t0: float = T0, **extra: Any) -> dict[str, Any]:
    """The i-th prediction: versions, errors, missing scores/latency/slices all occur."""
    classes = ("0", "1") if model == "m" else ("a", "b", "c")
    p = ((i * 37) % 100) / 100.0
    scores = {classes[0]: p, classes[1]: round(1 - p, 6)} if model == "m" else {
        "a": p / 2, "b": (1 - p) / 2, "c": 0.5}
    obj: dict[str, Any] = {
        "request_id": f"r{i}", "model": model, "model_version": ("v1", "v2")[i % 2],
        "timestamp": t0 + i * 13.7, "prediction": classes[(i * 7) % len(classes)],
        "latency_ms": (i * 53) % 1400,
        "slices": {"region": ("eu", "us", "apac")[i % 3], "sex": ("F", "M")[(i // 3) % 2]},
    }
    if i % 5 != 4:
        obj["scores"] = scores
    if i % 11 == 10:
        del obj["latency_ms"]
    if i % 17 == 16:
        obj["status"] = "error"
    if i % 7 == 6:
        del obj["slices"]["sex"]
    if i % 13 == 12:
        del obj["slices"]
    obj.update(extra)
    return obj


def feedback_obj(i: int, model: str = "m", t0: float = T0, **extra: Any) -> dict[str, Any]:
    """Feedback for prediction i; some of it timed before the prediction (delay 0)."""
    classes = ("0", "1") if model == "m" else ("a", "b", "c")
    return {"request_id": f"r{i}", "model": model, "label": classes[(i * 5 + 1) % len(classes)],
            "timestamp": t0 + i * 13.7 + (i % 9) * 40 - 30, **extra}


#: Settings for model "m" of the ingest acceptance tests (tests/ingest/conftest.py
#: `prediction`: classes 0-2, latency 0-96 ms, slices region eu/us), so that their
#: rollup checks cover the slice and SLO counters too.
INGEST_MODELS: dict[str, Any] = {
    "m": {
        "positive_class": "1",
        "slices": ["region"],
        "slos": [{"name": "fast", "kind": "latency", "objective": 0.9, "threshold": "50ms"}],
    },
}
