"""SQL aggregates over `predictions`, shared by the monitor families.

Everything here is a range scan on the (model, ts) index returning small
aggregates; nothing loads a window's rows into Python objects except the
quantile path on SQLite, which streams float columns per row into numpy
arrays in chunks (8 bytes a row and column; SQLite has no percentile
aggregate). Several windows are answered by one scan: per-bucket counts
(GROUP BY bucket) when windows are many and nested, as for SLO burn rates,
FILTERed aggregates for quantiles; the per-class counts come from the
segment-grouped scan of `aggregates.window_groups`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from modelmon.monitors.base import Window

if TYPE_CHECKING:
    from modelmon.monitors.aggregates import Group
from modelmon.store.tables import predictions

P = predictions
_CHUNK = 65_536


# -- planner settings for the window scans (PostgreSQL) ------------------------------

#: Set (transaction-local) around each window scan on PostgreSQL. The planner
#: cannot estimate the group count of the packed segment keys (they contain
#: `ts`, so it assumes one group per row): at the default 4MB work_mem it then
#: prefers a parallel sequential scan of the whole table feeding sorts that
#: spill to disk, and the plan's cost crosses the JIT inlining/optimisation
#: thresholds (compiling cost up to 4 s of a 6 s statement). With these, a
#: window is a bitmap scan of the (model, ts) index range into an in-memory
#: HashAggregate (~25MB for a 1.3M-row span). 64MB bounds each sort or hash
#: node of the statement (a hash may use hash_mem_multiplier times it, 2x by default).
WINDOW_SCAN_SETTINGS: dict[str, str] = {
    "work_mem": "64MB",
    "jit": "off",
    "max_parallel_workers_per_gather": "0",
}


@contextmanager
def window_scan_settings(conn: sa.Connection) -> Iterator[None]:
    """Apply WINDOW_SCAN_SETTINGS (SET LOCAL) for the statements in the block,
    then put the previous values back; nothing on other databases.

    On an exception the settings are not restored: the statement's error has
    aborted the transaction, which discards them.
    """
    if conn.dialect.name != "postgresql" or not WINDOW_SCAN_SETTINGS:
        yield
        return
    names = list(WINDOW_SCAN_SETTINGS)

    def apply(values: Sequence[str]) -> None:
        conn.execute(sa.select(*(sa.func.set_config(n, v, True) for n, v in zip(names, values, strict=True))))

    old = conn.execute(sa.select(*(sa.func.current_setting(n) for n in names))).one()
    apply([WINDOW_SCAN_SETTINGS[n] for n in names])
    yield
    apply(list(old))


def in_window(w: Window, ts: sa.ColumnElement = P.c.ts) -> sa.ColumnElement[bool]:
    return sa.and_(ts >= w.start, ts < w.end)


def _count_if(cond: sa.ColumnElement[bool]) -> sa.ColumnElement:
    return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0)


# -- class / label counts -------------------------------------------------------


def class_label_counts(groups: Sequence[Group]) -> dict[tuple[str, str | None], int]:
    """Count of status-ok predictions per (predicted class, label or None).

    A failed request's class is a fallback, not the model's answer: errors are
    the latency family's error rate, as in every quality family.
    """
    out: dict[tuple[str, str | None], int] = {}
    for g in groups:
        if g.ok:
            out[(g.prediction, g.label)] = out.get((g.prediction, g.label), 0) + g.n
    return out


def marginals(
    counts: Mapping[tuple[str, str | None], int],
) -> tuple[dict[str, int], dict[str, int]]:
    """(predicted-class counts, label counts over labelled rows)."""
    pred: dict[str, int] = {}
    lab: dict[str, int] = {}
    for (p, label), n in counts.items():
        pred[p] = pred.get(p, 0) + n
        if label is not None:
            lab[label] = lab.get(label, 0) + n
    return pred, lab


# -- request counts per time bucket ------------------------------------------------


@dataclass(slots=True)
class RequestCounts:
    """Request counts over one window; `good_under[t]` = ok with latency <= t."""

    total: int = 0
    errors: int = 0
    ok_with_latency: int = 0
    good_under: dict[float, int] | None = None


def _bucket_size(lengths: Sequence[float]) -> float:
    """The largest bucket (ms resolution) that tiles every window length."""
    g = 0
    for s in lengths:
        g = math.gcd(g, round(s * 1000))
    return max(g, 1) / 1000.0


def request_counts(
    conn: sa.Connection,
    model: str,
    now: float,
    lengths: Mapping[str, float],
    thresholds: Sequence[float] = (),
) -> dict[str, RequestCounts]:
    """Counts for trailing windows [now - L, now), by name, in one scan.

    Rows are grouped into buckets (ts - (now - longest)) // B, B tiling every
    length (so each window is a run of whole buckets ending at `now`), so a 28-day SLO period and seven burn-rate windows cost one
    GROUP BY over a few thousand buckets instead of a conditional sum each.
    """
    if not lengths:
        return {}
    b = _bucket_size(list(lengths.values()))
    longest = max(lengths.values())
    offset = (P.c.ts - (now - longest)) / b  # >= 0 in the scanned range
    bucket = sa.func.floor(offset) if conn.dialect.name == "postgresql" else sa.cast(offset, sa.Integer)
    ok = P.c.status == "ok"
    lat = P.c.latency_seconds
    cols = [
        sa.func.count().label("total"),
        _count_if(P.c.status != "ok").label("errors"),
        _count_if(sa.and_(ok, lat.is_not(None))).label("ok_lat"),
        *[_count_if(sa.and_(ok, lat <= t)).label(f"g{i}") for i, t in enumerate(thresholds)],
    ]
    bucket_col = bucket.label("bucket")
    stmt = (
        sa.select(bucket_col, *cols)
        .where(P.c.model == model, P.c.ts >= now - longest, P.c.ts < now)
        .group_by(bucket_col)
    )
    out = {n: RequestCounts(good_under={t: 0 for t in thresholds}) for n in lengths}
    total_buckets = round(longest / b)
    first = {n: total_buckets - round(s / b) for n, s in lengths.items()}
    for row in conn.execute(stmt):
        k = int(row[0])
        for name, rc in out.items():
            if k >= first[name]:
                rc.total += int(row[1])
                rc.errors += int(row[2])
                rc.ok_with_latency += int(row[3])
                assert rc.good_under is not None
                for i, t in enumerate(thresholds):
                    rc.good_under[t] += int(row[4 + i])
    return out


# -- quantiles ----------------------------------------------------------------------


def window_quantiles(
    conn: sa.Connection,
    value: sa.ColumnElement,
    where: sa.ColumnElement[bool],
    windows: Sequence[Window],
    qs: Sequence[float],
    ts: sa.ColumnElement = P.c.ts,
) -> list[tuple[int, dict[float, float | None]]]:
    """Exact quantiles of `value` (non-null, rows matching `where`) per window.

    Definition: numpy's default, linear interpolation between the order
    statistics at (n - 1) q. PostgreSQL: percentile_cont, which is the same
    definition, one FILTERed ordered-set aggregate per window. SQLite: the
    values of the windows' union are streamed in chunks into numpy and
    np.percentile is applied per window.
    Returns per window (n, {q: value or None when n == 0}).
    """
    if not windows:
        return []
    present = sa.and_(where, value.is_not(None))
    if conn.dialect.name == "postgresql":
        arr = sa.literal(list(qs), ARRAY(sa.Float))
        cols = []
        for w in windows:
            cond = in_window(w, ts)
            cols.append(sa.func.count(value).filter(cond))
            cols.append(sa.func.percentile_cont(arr).within_group(value).filter(cond))
        span = sa.and_(ts >= min(w.start for w in windows), ts < max(w.end for w in windows))
        with window_scan_settings(conn):
            row = conn.execute(sa.select(*cols).where(present, span)).one()
        out = []
        for i in range(len(windows)):
            n = int(row[2 * i] or 0)
            vals = row[2 * i + 1]
            out.append((n, {q: (float(v) if n else None) for q, v in zip(qs, vals or [None] * len(qs), strict=True)}))
        return out
    tsv, vals = stream_columns(conn, [ts, value], present, windows)
    return quantiles_per_window(tsv, vals, windows, qs)


def quantiles_per_window(
    tsv: np.ndarray, vals: np.ndarray, windows: Sequence[Window], qs: Sequence[float]
) -> list[tuple[int, dict[float, float | None]]]:
    """np.percentile (linear) of the non-NaN values whose ts is in each window."""
    out: list[tuple[int, dict[float, float | None]]] = []
    for w in windows:
        x = vals[(tsv >= w.start) & (tsv < w.end)]
        x = x[~np.isnan(x)]
        if x.size == 0:
            out.append((0, dict.fromkeys(qs)))
        else:
            qv = np.percentile(x, [100.0 * q for q in qs], method="linear")
            out.append((int(x.size), {q: float(v) for q, v in zip(qs, qv, strict=True)}))
    return out


def stream_columns(
    conn: sa.Connection,
    cols: Sequence[sa.ColumnElement],
    where: sa.ColumnElement[bool],
    windows: Sequence[Window],
) -> list[np.ndarray]:
    """The columns (cols[0] is the ts) of the rows in the windows' union, as
    float64 arrays (NULL -> NaN), read in chunks."""
    ts = cols[0]
    span = sa.and_(ts >= min(w.start for w in windows), ts < max(w.end for w in windows))
    result = conn.execute(sa.select(*cols).where(where, span))
    # The driver's cursor yields plain tuples: numpy converts those ~10x faster than Rows.
    cursor = result.cursor
    parts: list[np.ndarray] = []
    while chunk := cursor.fetchmany(_CHUNK):
        parts.append(np.array(chunk, dtype=np.float64))
    result.close()
    if not parts:
        return [np.empty(0) for _ in cols]
    both = np.concatenate(parts)
    return [both[:, i].copy() for i in range(len(cols))]


# -- freshness ----------------------------------------------------------------------


def last_prediction_ts(conn: sa.Connection, model: str, now: float | None = None) -> float | None:
    """Latest prediction time of the model (at or before `now` if given); one index seek."""
    stmt = sa.select(sa.func.max(P.c.ts)).where(P.c.model == model)
    if now is not None:
        stmt = stmt.where(P.c.ts <= now)
    v = conn.execute(stmt).scalar()
    return None if v is None else float(v)
