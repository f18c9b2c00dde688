"""Window aggregates several families share: one scan per (model, tick).

A pass needs the same few numbers per window from several families: shift
wants (prediction, label) counts of every window and its rolling baseline,
accuracy the confusion matrix, proxies the confidence sums and calibration
bins. `window_groups` answers all of them with ONE GROUP BY over the union of
the windows. Rows are tagged with their *segment*: the windows' start and end
points cut the union into elementary intervals, every window is a run of
whole segments, so a per-window number is a sum over a few segments (one CASE
per row instead of a conditional sum per window and column).

`AggregateCache` lets the families of one tick share such a result: the
scheduler installs one (`shared`) around each job, and `cached` computes a
key once per cache; without a cache installed everything is computed afresh.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from modelmon.config import ResolvedModel
from modelmon.monitors.base import Window
from modelmon.monitors.queries import (
    quantiles_per_window,
    stream_columns,
    window_quantiles,
    window_scan_settings,
)
from modelmon.monitors.windows import pass_windows
from modelmon.store.tables import predictions as P

T = TypeVar("T")

# -- segments ------------------------------------------------------------------------


def boundaries(windows: Sequence[Window]) -> list[float]:
    return sorted({w.start for w in windows} | {w.end for w in windows})


def segment_expr(bounds: Sequence[float], ts: sa.ColumnElement = P.c.ts) -> sa.ColumnElement[int]:
    """Index k of the segment [bounds[k], bounds[k + 1]) holding ts (rows in the span)."""
    if len(bounds) <= 2:
        return sa.literal(0)
    whens = [(ts < b, k) for k, b in enumerate(bounds[1:-1])]
    return sa.case(*whens, else_=len(bounds) - 2)


def window_segments(bounds: Sequence[float], w: Window) -> set[int]:
    return {k for k in range(len(bounds) - 1) if bounds[k] >= w.start and bounds[k + 1] <= w.end}


def span_where(model: str, bounds: Sequence[float]) -> sa.ColumnElement[bool]:
    """model = :m AND ts in [first, last bound): one range on the (model, ts) index."""
    return sa.and_(P.c.model == model, P.c.ts >= bounds[0], P.c.ts < bounds[-1])


# -- the shared GROUP BY ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Group:
    """Predictions of one segment with one (prediction, label, status ok, bin)."""

    prediction: str
    label: str | None
    ok: bool  # status == "ok"
    bin: int | None  # calibration bin of the per-row confidence
    n: int
    low: int  # score_max < confidence_threshold
    n_max: int
    sum_max: float
    n_ent: int
    sum_ent: float
    n_conf: int
    sum_conf: float


def window_groups(
    conn: sa.Connection, model: ResolvedModel, windows: Sequence[Window]
) -> list[list[Group]]:
    """Per window, its groups (summed over the window's segments); one scan."""
    from modelmon.monitors.queries_quality import bin_index, confidence_expr

    if not windows:
        return []
    bounds = boundaries(windows)
    conf = confidence_expr(model)
    nb = model.calibration_bins + 1  # bin + 1, 0 for no confidence
    ok = sa.case((P.c.status == "ok", 1), else_=0)
    b = sa.func.coalesce(bin_index(conn, conf, model.calibration_bins) + 1, 0)
    # (segment, status ok, bin) packed into one integer: SQLite sorts to group, fewer keys sort faster.
    key = ((segment_expr(bounds) * 2 + ok) * nb + b).label("k")
    low = sa.case((P.c.score_max < model.confidence_threshold, 1), else_=0)
    stmt = (
        sa.select(
            key, P.c.prediction, P.c.label,
            sa.func.count(), sa.func.coalesce(sa.func.sum(low), 0),
            sa.func.count(P.c.score_max), sa.func.coalesce(sa.func.sum(P.c.score_max), 0.0),
            sa.func.count(P.c.entropy), sa.func.coalesce(sa.func.sum(P.c.entropy), 0.0),
            sa.func.count(conf), sa.func.coalesce(sa.func.sum(conf), 0.0),
        )
        .where(span_where(model.name, bounds))
        .group_by(key, P.c.prediction, P.c.label)
    )
    per_seg: dict[int, list[tuple[Any, ...]]] = {}
    with window_scan_settings(conn):  # PostgreSQL: index range + in-memory hash aggregate
        rows = conn.execute(stmt).all()
    for k, p, lab, *vals in rows:
        rest, bn = divmod(int(k), nb)
        per_seg.setdefault(rest // 2, []).append((p, lab, rest % 2, bn - 1 if bn else None, *vals))
    out = []
    for w in windows:
        acc: dict[tuple[Any, ...], list[float]] = {}
        for k in sorted(window_segments(bounds, w)):
            for p, lab, okf, bn, *vals in per_seg.get(k, ()):
                gk = (p, lab, bool(okf), bn)
                cur = acc.setdefault(gk, [0, 0, 0, 0.0, 0, 0.0, 0, 0.0])
                for i, v in enumerate(vals):
                    cur[i] += v
        out.append([
            Group(*gk, int(v[0]), int(v[1]), int(v[2]), float(v[3]), int(v[4]), float(v[5]),
                  int(v[6]), float(v[7]))
            for gk, v in acc.items()
        ])
    return out


def model_key(model: ResolvedModel) -> tuple[Hashable, ...]:
    return (model.name, model.task, model.positive_class, model.calibration_bins,
            model.confidence_threshold)


def ok_quantiles(
    conn: sa.Connection,
    model: str,
    windows: Sequence[Window],
    column: str,
    qs: Sequence[float],
    only: Sequence[Window] | None = None,
) -> list[tuple[int, dict[float, float | None]]]:
    """Quantiles of `column` ("latency" or "delay", the label delay) over the
    status-ok rows of each window (of `only`, a subset, if given).

    PostgreSQL: percentile_cont in the server. SQLite: ts, latency and delay of
    the windows' union are streamed once per tick into numpy (24 bytes a row),
    shared by the latency and accuracy families.
    """
    only = list(windows if only is None else only)
    if not only:
        return []
    delay = sa.case((P.c.label.is_not(None), P.c.label_ts - P.c.ts))
    value = P.c.latency_seconds if column == "latency" else delay
    ok = sa.and_(P.c.model == model, P.c.status == "ok")
    if conn.dialect.name != "sqlite":
        return window_quantiles(conn, value, ok, only, qs)
    cols = [P.c.ts, P.c.latency_seconds, delay]
    key = ("ok_columns", model, max(w.end for w in windows), tuple(windows))
    tsv, lat, dly = cached(key, lambda: stream_columns(conn, cols, ok, windows))
    return quantiles_per_window(tsv, lat if column == "latency" else dly, only, qs)


# -- sharing between the families of one tick ---------------------------------------------


class AggregateCache:
    """A small, thread-safe memo of aggregates; each key is computed once.

    Keys are (kind, model, tick, ...): storing a model's aggregate of a new
    tick drops that model's older ticks, so only the current tick's arrays
    (24 bytes a row on SQLite) stay in memory.
    """

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._values: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = compute()  # a failure is not cached
            with self._lock:
                if isinstance(key, tuple) and len(key) > 2:
                    for old in [k for k in self._values if _stale(k, key)]:
                        del self._values[old]
                        self._key_locks.pop(old, None)
                self._values[key] = value
                while len(self._values) > self.size:
                    old, _ = self._values.popitem(last=False)
                    self._key_locks.pop(old, None)
            return value


def _stale(old: Hashable, new: tuple[Any, ...]) -> bool:
    return isinstance(old, tuple) and len(old) > 2 and old[1] == new[1] and old[2] != new[2]


_current: ContextVar[AggregateCache | None] = ContextVar("modelmon_aggregates", default=None)


@contextmanager
def shared(cache: AggregateCache) -> Iterator[None]:
    token = _current.set(cache)
    try:
        yield
    finally:
        _current.reset(token)


def cached(key: Hashable, compute: Callable[[], T]) -> T:
    cache = _current.get()
    return compute() if cache is None else cache.get(key, compute)


def tick_groups(conn: sa.Connection, model: ResolvedModel, now: float) -> dict[Window, list[Group]]:
    """`window_groups` of the tick's windows and rolling baselines, by window."""
    windows = pass_windows(model, now)
    key = ("window_groups", model.name, now, model_key(model), tuple(windows))
    groups = cached(key, lambda: window_groups(conn, model, windows))
    return dict(zip(windows, groups, strict=True))
