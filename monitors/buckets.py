"""Reading rollups: per window and model version, sums over a few bucket rows.

A window [start, end) on fine-bucket boundaries is covered by whole coarse
buckets in its middle and fine buckets at its two edges (a 1-day window: at
most 2 x 59 minute buckets and 23 hourly ones; a 28-day SLO period: 672
hourly ones and a few minutes). `Plan` cuts the pieces of all windows of a
pass into elementary segments per resolution, and `window_sums` answers
every window with ONE GROUP BY (segment, model_version, dimensions) over the
rollup table: the database sums a few hundred bucket rows per segment and
returns a handful of rows, which Python adds up per window. The cost of a
pass depends on the number of buckets and dimensions, never on the events.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from modelmon.config import ResolvedModel
from modelmon.monitors.aggregates import cached
from modelmon.monitors.base import Window

ALL_VERSIONS = "*"


def decompose(start: float, end: float, fine: int, coarse: int) -> list[tuple[int, int, int]]:
    """(resolution, first bucket, end) pieces covering [start, end) exactly."""
    lo, hi = int(start), int(end)
    c1 = math.ceil(lo / coarse) * coarse
    c2 = math.floor(hi / coarse) * coarse
    if c1 >= c2:
        return [(fine, lo, hi)] if lo < hi else []
    pieces = [(fine, lo, c1)] if lo < c1 else []
    pieces.append((coarse, c1, c2))
    if c2 < hi:
        pieces.append((fine, c2, hi))
    return pieces


@dataclass(slots=True)
class Plan:
    """The segments of a set of windows, per resolution, and which make up each window."""

    windows: list[Window]
    fine: int
    coarse: int
    bounds: dict[int, list[int]] = field(default_factory=dict)  # res -> sorted boundaries
    members: list[list[tuple[int, int]]] = field(default_factory=list)  # per window: (res, segment)

    def __post_init__(self) -> None:
        pieces = [decompose(w.start, w.end, self.fine, self.coarse) for w in self.windows]
        cuts: dict[int, set[int]] = {}
        for ps in pieces:
            for res, lo, hi in ps:
                cuts.setdefault(res, set()).update((lo, hi))
        self.bounds = {res: sorted(c) for res, c in cuts.items()}
        for ps in pieces:
            segs = []
            for res, lo, hi in ps:
                b = self.bounds[res]
                segs += [(res, k) for k in range(b.index(lo), b.index(hi))]
            self.members.append(segs)

    def offset(self, res: int) -> int:
        return 0 if res == self.fine else 1_000_000

    def ranges(self) -> list[tuple[int, int, int]]:
        """(res, first bucket, end) of the merged runs of segments any window uses."""
        out = []
        for res, b in self.bounds.items():
            used = sorted({k for segs in self.members for r, k in segs if r == res})
            run: list[int] = []
            for k in used:
                if run and run[1] == k:
                    run[1] = k + 1
                else:
                    if run:
                        out.append((res, b[run[0]], b[run[1]]))
                    run = [k, k + 1]
            if run:
                out.append((res, b[run[0]], b[run[1]]))
        return out

    def sql(self, conn: sa.Connection, table: sa.Table, dims: Sequence[str], model: str) -> tuple[str, list[Any]]:
        """The GROUP BY (segment, version, dims) over the plan's buckets, with its
        parameters. Hand-built text, cached by shape: SQLAlchemy's expression
        building cost more than the statement (a pass runs a few per model)."""
        ranges = self.ranges()
        shape = (conn.dialect.name, table.name, tuple(dims),
                 tuple((res, len(b)) for res, b in self.bounds.items()), tuple(r[0] for r in ranges))
        params: list[Any] = []
        for res, b in self.bounds.items():  # the CASE: res, then its inner cut points
            params += [res, *b[1:-1]]
        params.append(model)
        params += [x for rng in ranges for x in rng]
        sql = _SQL.get(shape)
        if sql is None:
            sql = _SQL[shape] = self._sql_text(conn, table, dims, ranges)
        return sql, params

    def _sql_text(self, conn: sa.Connection, table: sa.Table, dims: Sequence[str],
                  ranges: list[tuple[int, int, int]]) -> str:
        p = "%s" if conn.dialect.paramstyle in ("format", "pyformat") else "?"
        q = conn.dialect.identifier_preparer.quote
        cases = []
        for res, b in self.bounds.items():
            whens = " ".join(f"WHEN bucket < {p} THEN {k}" for k in range(len(b) - 2))
            inner = f"(CASE {whens} ELSE {len(b) - 2} END)" if len(b) > 2 else "0"
            cases.append(f"WHEN res = {p} THEN {inner} + {self.offset(res)}")
        keys = [c.name for c in table.primary_key.columns]
        values = [c.name for c in table.columns if c.name not in keys]
        aggs = ", ".join(f"{'MAX' if v == 'last_ts' else 'SUM'}({q(v)})" for v in values)
        group = ", ".join(["model_version", *(q(d) for d in dims)])
        where = " OR ".join(f"(res = {p} AND bucket >= {p} AND bucket < {p})" for _ in ranges) or "1 = 0"
        return (
            f"SELECT CASE {' '.join(cases)} ELSE -1 END AS seg, {group}, {aggs} FROM {q(table.name)} "
            f"WHERE model = {p} AND ({where}) GROUP BY 1, {group}"
        )


_SQL: dict[tuple[Any, ...], str] = {}


def window_sums(
    conn: sa.Connection,
    table: sa.Table,
    model: ResolvedModel,
    windows: Sequence[Window],
    dims: Sequence[str] = (),
    tick: float | None = None,
) -> list[dict[tuple[Any, ...], list[Any]]]:
    """Per window: {(model_version, *dims): [sum of each value column]} (max for last_ts).

    Computed once per (table, model, windows, dims) in a scheduler tick (the
    families share it through `aggregates.cached`).
    """
    windows = list(windows)
    if not windows:
        return []
    key: Hashable = ("rollup:" + table.name, model.name, tick, tuple(windows), tuple(dims),
                     model.bucket_seconds, model.coarse_seconds)
    return cached(key, lambda: _window_sums(conn, table, model, windows, dims))


def _window_sums(
    conn: sa.Connection, table: sa.Table, model: ResolvedModel, windows: list[Window], dims: Sequence[str]
) -> list[dict[tuple[Any, ...], list[Any]]]:
    plan = Plan(windows, int(model.bucket_seconds), int(model.coarse_seconds))
    keys = [c.name for c in table.primary_key.columns]
    values = [c for c in table.columns if c.name not in keys]
    sql, params = plan.sql(conn, table, dims, model.name)
    per_seg: dict[tuple[int, int], list[tuple[Any, ...]]] = {}
    for row in conn.exec_driver_sql(sql, tuple(params)):
        s = int(row[0])
        res = plan.fine if s < 1_000_000 else plan.coarse
        per_seg.setdefault((res, s - plan.offset(res)), []).append(tuple(row[1:]))
    nkey = 1 + len(dims)
    is_max = [c.name == "last_ts" for c in values]
    out = []
    for segs in plan.members:
        acc: dict[tuple[Any, ...], list[Any]] = {}
        for sg in segs:
            for row in per_seg.get(sg, ()):
                k, vals = row[:nkey], row[nkey:]
                cur = acc.get(k)
                if cur is None:
                    acc[k] = [v if v is not None else 0 for v in vals]
                    continue
                for i, v in enumerate(vals):
                    if v is None:
                        continue
                    cur[i] = max(cur[i], v) if is_max[i] else cur[i] + v
        out.append(acc)
    return out


def top_versions(request_sums: dict[tuple[Any, ...], list[Any]], k: int) -> list[str]:
    """The k versions with the most predictions in a window (ties by name)."""
    if k <= 0:
        return []
    ranked = sorted(((-int(v[0]), key[0]) for key, v in request_sums.items() if v[0] > 0))
    return [name for _, name in ranked[:k]]


# -- what the families ask for ------------------------------------------------------------


def versions_per_window(
    conn: sa.Connection, model: ResolvedModel, windows: Sequence[Window], tick: float | None
) -> list[list[str]]:
    """Per window: "*" then the model's top `version_top_k` versions by traffic in it."""
    from modelmon.store.tables import rollup_requests

    sums = window_sums(conn, rollup_requests, model, windows, (), tick)
    return [[ALL_VERSIONS, *top_versions(s, model.version_top_k)] for s in sums]


def versioned(rows: Sequence[Any], version: str) -> list[Any]:
    """MetricRows of one version (rows are computed as "*", the default)."""
    from dataclasses import replace

    return list(rows) if version == ALL_VERSIONS else [replace(r, model_version=version) for r in rows]


def all_versions(
    sums: dict[tuple[Any, ...], list[Any]], ndims: int, convert: Any = None
) -> dict[str, dict[tuple[Any, ...], Any]]:
    """{version: {dims: values}} for "*" and every version present (no top-K cut).

    `convert` maps a dims tuple to the key the family uses (e.g. "" -> None).
    """
    out: dict[str, dict[tuple[Any, ...], Any]] = {}
    for key, vals in sums.items():
        version, dims = key[0], key[1 : 1 + ndims]
        k = convert(dims) if convert else dims
        for target in (ALL_VERSIONS, version):
            d = out.setdefault(target, {})
            cur = d.get(k)
            if cur is None:
                d[k] = list(vals)
            else:
                for i, v in enumerate(vals):
                    cur[i] += v
    return out


def class_cells(
    conn: sa.Connection, model: ResolvedModel, windows: Sequence[Window], tick: float | None
) -> list[dict[str, dict[tuple[str, str | None], int]]]:
    """Per window and version: status-ok prediction counts per (predicted class, label or None)."""
    from modelmon.store.tables import rollup_classes

    sums = window_sums(conn, rollup_classes, model, windows, ("prediction", "label"), tick)
    out = []
    for s in sums:
        per = all_versions(s, 2, lambda d: (d[0], d[1] or None))
        out.append({v: {k: int(x[0]) for k, x in cells.items() if x[0]} for v, cells in per.items()})
    return out
