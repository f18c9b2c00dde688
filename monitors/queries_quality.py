"""SQL aggregates for the quality monitors (accuracy, proxies, fairness).

Every query is a GROUP BY over one trailing window of one model that returns a
handful of rows (a confusion matrix, calibration bins, top-K slices, a few
order statistics), so a window of millions of predictions is never loaded.
Windows are on prediction time; predictions with status "error" are left out
(their failure is the latency family's error rate, not a quality signal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelmon.monitors.base import Window
from modelmon.monitors.stats_classification import CalibrationBin, linear_quantile
from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
)

from modelmon.config import ResolvedModel
from modelmon.store.tables import predictions as P

MISSING_SLICE = "__missing__"
OTHER_SLICE = "__other__"


def in_window(model: str, window: Window) -> ColumnElement[bool]:
    return and_(P.c.model == model, P.c.ts >= window.start, P.c.ts < window.end, P.c.status == "ok")


def _flag(cond: ColumnElement[bool]) -> ColumnElement[int]:
    return case((cond, 1), else_=0)


# --- confusion matrix -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfusionCounts:
    """{(predicted, label): n}; label None for predictions still unlabelled."""

    cells: dict[tuple[str, str | None], int]

    @property
    def total(self) -> int:
        return sum(self.cells.values())

    @property
    def labelled(self) -> int:
        return sum(n for (_, label), n in self.cells.items() if label is not None)

    def labelled_cells(self) -> dict[tuple[str, str], int]:
        return {(p, lab): n for (p, lab), n in self.cells.items() if lab is not None}


def confusion_counts(conn: Connection, model: str, window: Window) -> ConfusionCounts:
    stmt = (
        select(P.c.prediction, P.c.label, func.count())
        .where(in_window(model, window))
        .group_by(P.c.prediction, P.c.label)
    )
    return ConfusionCounts({(pred, label): int(n) for pred, label, n in conn.execute(stmt)})


def delay_quantiles(
    conn: Connection, model: str, window: Window, quantiles: Sequence[float]
) -> tuple[int, dict[float, float]]:
    """(n, {q: quantile}) of label delay (feedback ts - prediction ts), numpy's linear method.

    PostgreSQL: percentile_cont, which interpolates at rank (n - 1) * q exactly
    like numpy's default. SQLite has no percentile aggregate: one sort in the
    database (ROW_NUMBER over the delay, COUNT over the whole set) returns only
    the few order statistics around each quantile's rank, so n and the ranks
    come from the same snapshot of the data.
    """
    delay = (P.c.label_ts - P.c.ts).label("d")
    labelled = and_(in_window(model, window), P.c.label.is_not(None), P.c.label_ts.is_not(None))
    if conn.dialect.name == "postgresql":
        cols = [func.percentile_cont(float(q)).within_group(delay) for q in quantiles]
        row = conn.execute(select(func.count(), *cols).where(labelled)).one()
        n = int(row[0])
        return n, ({} if n == 0 else {q: float(v) for q, v in zip(quantiles, row[1:], strict=True)})
    inner = (
        select(
            delay,
            func.row_number().over(order_by=delay).label("rn"),
            func.count().over().label("cnt"),
        )
        .where(labelled)
        .subquery()
    )
    near = []
    for q in quantiles:
        # 1-based rank of the lower order statistic, with a margin of one either
        # side for any rounding difference between the database and Python.
        lo = _floor(conn, (inner.c.cnt - 1) * float(q)) + 1
        near.append(and_(inner.c.rn >= lo - 1, inner.c.rn <= lo + 2))
    stmt = select(inner.c.rn, inner.c.d, inner.c.cnt).where(or_(*near))
    stats: dict[int, float] = {}
    n = 0
    for rn, d, cnt in conn.execute(stmt):
        stats[int(rn) - 1] = float(d)
        n = int(cnt)
    out: dict[float, float] = {}
    for q in quantiles:
        value = linear_quantile(stats, n, q)
        if value is not None:
            out[q] = value
    return n, out


def _floor(conn: Connection, expr: ColumnElement[float]) -> ColumnElement[int]:
    if conn.dialect.name == "sqlite":
        return cast(expr, Integer)  # truncation == floor for values >= 0
    return cast(func.floor(expr), Integer)  # CAST alone rounds on PostgreSQL


# --- confidence and calibration ----------------------------------------------


def confidence_expr(model: ResolvedModel) -> ColumnElement[float]:
    """Per-row probability that the prediction is right (the CBPE estimate).

    multiclass: the probability of the predicted class (score_pred, which the
    contract looks up by class *name* in the logged scores).
    binary: 1 - |y_hat - p| with y_hat = 1 if predicted positive and
    p = P(positive) = score_pred when predicted positive, else 1 - score_pred.
    That reads the two binary scores as summing to 1 (the contract fills in
    the complement when only one score is logged); it avoids parsing the
    scores JSON of every row, which made the query several times slower.
    """
    if model.task != "binary" or model.positive_class is None:
        return P.c.score_pred
    predicted_pos = P.c.prediction == model.positive_class
    p_pos = case((predicted_pos, P.c.score_pred), else_=1.0 - P.c.score_pred)
    y_hat = case((predicted_pos, 1.0), else_=0.0)
    return 1.0 - func.abs(y_hat - p_pos)


def _bin_index(conn: Connection, conf: ColumnElement[float], bins: int) -> ColumnElement[int]:
    """min(floor(conf * bins), bins - 1); NULL where conf is NULL."""
    return case((conf >= 1.0, bins - 1), else_=_floor(conn, conf * float(bins)))


@dataclass(frozen=True, slots=True)
class ProxySums:
    total: int  # predictions in the window
    labelled: int
    n_max: int  # rows with a top-class probability
    sum_max: float
    low: int  # rows with score_max < confidence_threshold
    n_entropy: int
    sum_entropy: float
    n_conf: int  # rows with a per-row confidence (CBPE estimate)
    sum_conf: float
    labelled_conf: int  # labelled rows with a confidence
    labelled_sum_conf: float
    labelled_correct: int  # ... of which predicted right
    bins: list[CalibrationBin]  # over labelled rows with a confidence


def proxy_sums(conn: Connection, model: ResolvedModel, window: Window) -> ProxySums:
    """All proxy aggregates of a window in one scan, grouped by (bin, labelled)."""
    conf = confidence_expr(model)
    inner = (
        select(
            _bin_index(conn, conf, model.calibration_bins).label("bin"),
            _flag(P.c.label.is_not(None)).label("lab"),
            conf.label("conf"),
            P.c.score_max.label("smax"),
            P.c.entropy.label("ent"),
            _flag(P.c.score_max < model.confidence_threshold).label("low"),
            _flag(P.c.label == P.c.prediction).label("ok"),
        )
        .where(in_window(model.name, window))
        .subquery()
    )
    c = inner.c
    stmt = select(
        c.bin,
        c.lab,
        func.count(),
        func.count(c.smax),
        func.coalesce(func.sum(c.smax), 0.0),
        func.coalesce(func.sum(c.low), 0),
        func.count(c.ent),
        func.coalesce(func.sum(c.ent), 0.0),
        func.count(c.conf),
        func.coalesce(func.sum(c.conf), 0.0),
        func.coalesce(func.sum(c.ok), 0),
    ).group_by(c.bin, c.lab)
    acc = dict.fromkeys(
        ("total", "labelled", "n_max", "low", "n_ent", "n_conf", "lab_conf", "lab_ok"), 0
    )
    sums = dict.fromkeys(("max", "ent", "conf", "lab_conf"), 0.0)
    bins: list[CalibrationBin] = []
    for b, lab, n, n_max, s_max, low, n_ent, s_ent, n_conf, s_conf, n_ok in conn.execute(stmt):
        acc["total"] += n
        acc["n_max"] += n_max
        acc["low"] += int(low)
        acc["n_ent"] += n_ent
        acc["n_conf"] += n_conf
        sums["max"] += float(s_max)
        sums["ent"] += float(s_ent)
        sums["conf"] += float(s_conf)
        if lab:
            acc["labelled"] += n
            if b is not None:
                acc["lab_conf"] += n_conf
                acc["lab_ok"] += int(n_ok)
                sums["lab_conf"] += float(s_conf)
                bins.append(CalibrationBin(int(b), int(n_conf), float(s_conf), int(n_ok)))
    return ProxySums(
        total=acc["total"],
        labelled=acc["labelled"],
        n_max=acc["n_max"],
        sum_max=sums["max"],
        low=acc["low"],
        n_entropy=acc["n_ent"],
        sum_entropy=sums["ent"],
        n_conf=acc["n_conf"],
        sum_conf=sums["conf"],
        labelled_conf=acc["lab_conf"],
        labelled_sum_conf=sums["lab_conf"],
        labelled_correct=acc["lab_ok"],
        bins=sorted(bins, key=lambda x: x.index),
    )


# --- slices -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SliceCounts:
    """What fairness needs of one slice (or of the whole window)."""

    n: int = 0
    selected: int = 0  # predicted positive
    labelled: int = 0
    correct: int = 0
    positives: int = 0  # labelled positive
    tp: int = 0
    negatives: int = 0  # labelled, not positive
    fp: int = 0

    def __sub__(self, other: SliceCounts) -> SliceCounts:
        return SliceCounts(*(a - b for a, b in zip(_astuple(self), _astuple(other), strict=True)))

    def __add__(self, other: SliceCounts) -> SliceCounts:
        return SliceCounts(*(a + b for a, b in zip(_astuple(self), _astuple(other), strict=True)))


def _astuple(s: SliceCounts) -> tuple[int, ...]:
    return (s.n, s.selected, s.labelled, s.correct, s.positives, s.tp, s.negatives, s.fp)


def slice_counts(
    conn: Connection, model: ResolvedModel, window: Window, attribute: str, positive: str, k: int
) -> tuple[list[tuple[str, SliceCounts]], SliceCounts | None, SliceCounts]:
    """(k most frequent values of `attribute`, the missing-value group, window totals).

    One scan: the database groups by value, sums every group (window
    functions over the grouped rows, evaluated before LIMIT) and returns at
    most k + 1 groups however many distinct values the attribute has, so the
    pooled rest is totals - top - missing from the same snapshot. Ties in
    frequency are broken by value in the database's collation.
    """
    value = P.c.slices[attribute].as_string()
    label = P.c.label
    inner = (
        select(
            value.label("v"),
            _flag(P.c.prediction == positive).label("sel"),
            _flag(label.is_not(None)).label("lab"),
            _flag(label == P.c.prediction).label("ok"),
            _flag(label == positive).label("pos"),
            _flag(and_(label == positive, P.c.prediction == positive)).label("tp"),
            _flag(and_(label.is_not(None), label != positive)).label("neg"),
            _flag(and_(label.is_not(None), label != positive, P.c.prediction == positive)).label(
                "fp"
            ),
        )
        .where(in_window(model.name, window))
        .subquery()
    )
    c = inner.c
    n = func.count()
    per_group = [n] + [
        func.coalesce(func.sum(col), literal(0))
        for col in (c.sel, c.lab, c.ok, c.pos, c.tp, c.neg, c.fp)
    ]
    totals = [func.sum(agg).over() for agg in per_group]
    stmt = (
        select(c.v, *per_group, *totals)
        .group_by(c.v)
        .order_by(case((c.v.is_(None), 0), else_=1), n.desc(), c.v)
        .limit(k + 1)
    )
    top: list[tuple[str, SliceCounts]] = []
    missing: SliceCounts | None = None
    total = SliceCounts()
    width = len(per_group)
    for row in conn.execute(stmt):
        counts = SliceCounts(*(int(x) for x in row[1 : 1 + width]))
        total = SliceCounts(*(int(x) for x in row[1 + width :]))
        if row[0] is None:
            missing = counts
        elif len(top) < k:
            top.append((str(row[0]), counts))
    return top, missing, total


__all__ = [
    "MISSING_SLICE",
    "OTHER_SLICE",
    "ConfusionCounts",
    "ProxySums",
    "SliceCounts",
    "confidence_expr",
    "confusion_counts",
    "delay_quantiles",
    "in_window",
    "proxy_sums",
    "slice_counts",
]
