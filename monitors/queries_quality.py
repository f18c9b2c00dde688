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

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    and_,
    case,
    cast,
    func,
    literal,
    select,
    union_all,
)

from modelmon.config import ResolvedModel
from modelmon.monitors.aggregates import (
    Group,
    boundaries,
    segment_expr,
    span_where,
    window_segments,
)
from modelmon.monitors.base import Window
from modelmon.monitors.queries import window_scan_settings
from modelmon.monitors.stats_classification import CalibrationBin
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


def confusion_from(groups: Sequence[Group]) -> ConfusionCounts:
    """The window's confusion counts (status ok) from the shared groups."""
    cells: dict[tuple[str, str | None], int] = {}
    for g in groups:
        if g.ok:
            cells[(g.prediction, g.label)] = cells.get((g.prediction, g.label), 0) + g.n
    return ConfusionCounts(cells)


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


def bin_index(conn: Connection, conf: ColumnElement[float], bins: int) -> ColumnElement[int]:
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


def proxy_sums_from(groups: Sequence[Group]) -> ProxySums:
    """All proxy aggregates of a window (status ok) from the shared groups."""
    acc = dict.fromkeys(("total", "labelled", "n_max", "low", "n_ent", "n_conf", "lab_conf", "lab_ok"), 0)
    sums = dict.fromkeys(("max", "ent", "conf", "lab_conf"), 0.0)
    bins: dict[int, list[float]] = {}
    for g in groups:
        if not g.ok:
            continue
        acc["total"] += g.n
        acc["n_max"] += g.n_max
        acc["low"] += g.low
        acc["n_ent"] += g.n_ent
        acc["n_conf"] += g.n_conf
        sums["max"] += g.sum_max
        sums["ent"] += g.sum_ent
        sums["conf"] += g.sum_conf
        if g.label is not None:
            acc["labelled"] += g.n
            if g.bin is not None:
                right = g.n if g.label == g.prediction else 0
                acc["lab_conf"] += g.n_conf
                acc["lab_ok"] += right
                sums["lab_conf"] += g.sum_conf
                b = bins.setdefault(g.bin, [0, 0.0, 0])
                b[0] += g.n_conf
                b[1] += g.sum_conf
                b[2] += right
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
        bins=[CalibrationBin(i, int(v[0]), float(v[1]), int(v[2])) for i, v in sorted(bins.items())],
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


SliceResult = tuple[list[tuple[str, SliceCounts]], SliceCounts | None, SliceCounts]


def slice_counts(
    conn: Connection,
    model: ResolvedModel,
    windows: Sequence[Window],
    positive: str,
    k: int,
) -> dict[tuple[int, str], SliceResult]:
    """Per (window index, attribute): (k most frequent values, the missing-value
    group, window totals), for every configured attribute and window in one scan.

    The rows of the windows' union are grouped once by (segment, every
    attribute's value, four 0/1 flags) into a materialised CTE (a few hundred
    rows for low-cardinality attributes; at worst one per row). Per (window,
    attribute) the database then groups that by value, sums every group
    (window functions over the grouped rows, evaluated before LIMIT) and
    returns at most k + 1 groups however many distinct values the attribute
    has, so the pooled rest is totals - top - missing from the same snapshot.
    Ties in frequency are broken by value in the database's collation.
    """
    attrs = list(model.slices)
    if not windows or not attrs:
        return {}
    bounds = boundaries(windows)
    label = P.c.label
    values = [P.c.slices[a].as_string().label(f"v{i}") for i, a in enumerate(attrs)]
    # (segment, selected, labelled, correct, labelled positive) packed into one
    # integer: SQLite sorts to group, and fewer keys sort faster.
    flags = (
        segment_expr(bounds) * 16
        + _flag(P.c.prediction == positive)
        + 2 * _flag(label.is_not(None))
        + 4 * _flag(label == P.c.prediction)
        + 8 * _flag(label == positive)
    ).label("k")
    base = (
        select(flags, *values)
        .where(span_where(model.name, bounds), P.c.status == "ok")
        .subquery()
    )
    keys = [base.c.k, *(base.c[v.name] for v in values)]
    g = select(*keys, func.count().label("n")).group_by(*keys).cte("g").prefix_with("MATERIALIZED")
    sel, lab, ok, pos = (g.c.k % 2 == 1), (g.c.k % 4 >= 2), (g.c.k % 8 >= 4), (g.c.k % 16 >= 8)
    parts = []
    for wi, w in enumerate(windows):
        segs = sorted(window_segments(bounds, w))  # a run of consecutive segments
        in_w = and_(g.c.k >= segs[0] * 16, g.c.k < (segs[-1] + 1) * 16)
        for ai in range(len(attrs)):
            v = g.c[f"v{ai}"]
            n = func.sum(g.c.n)

            def s(cond: ColumnElement[bool]) -> ColumnElement[int]:
                return func.coalesce(func.sum(case((cond, g.c.n), else_=0)), literal(0))

            per_group = [n, s(sel), s(lab), s(ok), s(pos), s(and_(pos, sel)),
                         s(and_(lab, ~pos)), s(and_(lab, ~pos, sel))]
            order = (case((v.is_(None), 0), else_=1), n.desc(), v)
            part = (
                select(literal(wi).label("w"), literal(ai).label("a"), v.label("v"),
                       func.row_number().over(order_by=order).label("rk"),
                       *(x.label(f"c{j}") for j, x in enumerate(per_group)),
                       *(func.sum(x).over().label(f"t{j}") for j, x in enumerate(per_group)))
                .where(in_w)
                .group_by(v)
                .order_by(*order)
                .limit(k + 1)
                .subquery()
            )
            parts.append(select(part))
    u = union_all(*parts).subquery()
    out: dict[tuple[int, str], SliceResult] = {
        (wi, a): ([], None, SliceCounts()) for wi in range(len(windows)) for a in attrs
    }
    width = 8
    with window_scan_settings(conn):  # PostgreSQL: index range + in-memory hash aggregate
        rows = conn.execute(select(u).order_by(u.c.w, u.c.a, u.c.rk)).all()
    for row in rows:
        top, missing, _ = out[(int(row.w), attrs[int(row.a)])]
        counts = SliceCounts(*(int(x) for x in row[4 : 4 + width]))
        total = SliceCounts(*(int(x) for x in row[4 + width :]))
        if row.v is None:
            missing = counts
        elif len(top) < k:
            top.append((str(row.v), counts))
        out[(int(row.w), attrs[int(row.a)])] = (top, missing, total)
    return out


__all__ = [
    "MISSING_SLICE",
    "OTHER_SLICE",
    "ConfusionCounts",
    "ProxySums",
    "SliceCounts",
    "confidence_expr",
    "confusion_from",
    "in_window",
    "proxy_sums_from",
    "slice_counts",
]
