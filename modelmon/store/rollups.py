"""Rollups: the additive aggregates the monitors read, kept at write time.

Every stored prediction adds to one bucket per resolution (`rollups.fine`,
`rollups.coarse`) of its prediction time, and a label that joins a stored
prediction moves that prediction's counts from "unlabelled" to its label in
the same buckets. Both happen in the transaction that stores the events
(`modelmon.store.writes.write_batch`, `reconcile_labels`), on the events that
transaction actually inserted or labelled, so the store's exactly-once
guarantee covers the rollups: a redelivered or conflicting event adds
nothing, and a label counts once whether it arrives before or after its
prediction. Upserts add (`n = n + excluded.n`), so concurrent writers on
PostgreSQL compose, and a pass of the monitors reads a few hundred bucket
rows whatever the number of events.

What each table holds is in `modelmon.store.tables`. Some counters depend on
a model's configuration (slice attributes, positive class, confidence
threshold, calibration bins, latency SLO thresholds, sketch accuracy): after
changing those, `modelmon rollups rebuild` recomputes the buckets from the
raw rows (`modelmon.store.rebuild`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import add, itemgetter
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa

from modelmon.config import Config, ResolvedModel
from modelmon.store import sketch
from modelmon.store.tables import (
    rollup_calibration,
    rollup_classes,
    rollup_latency_good,
    rollup_requests,
    rollup_sketches,
    rollup_slices,
    slice_values,
)

UNLABELLED = ""  # rollup_classes.label of predictions without a label
MISSING_SLICE = "__missing__"
OTHER_SLICE = "__other__"
_NO_SLICES: dict[str, Any] = {}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What a model's rollups count, from its configuration."""

    resolutions: tuple[int, ...]  # (fine, coarse) bucket lengths in seconds
    slices: tuple[str, ...]
    positive: str | None  # slice counters need it (selected, TPR, FPR)
    confidence_threshold: float
    bins: int
    thresholds: tuple[float, ...]  # latency SLO thresholds, seconds
    accuracy: float  # sketch relative accuracy


def spec_of(m: ResolvedModel) -> ModelSpec:
    return ModelSpec(
        resolutions=(int(m.bucket_seconds), int(m.coarse_seconds)),
        slices=tuple(m.slices) if m.positive_class is not None else (),
        positive=m.positive_class,
        confidence_threshold=m.confidence_threshold,
        bins=m.calibration_bins,
        thresholds=tuple(sorted({s.threshold for s in m.slos if s.threshold is not None})),
        accuracy=m.sketch_relative_accuracy,
    )


class Specs:
    """ModelSpec per model name, resolved once from the configuration."""

    def __init__(self, cfg: Config | None = None) -> None:
        self.cfg = cfg if cfg is not None else Config()
        self.slice_values_max = self.cfg.rollups.slice_values_max
        self._cache: dict[str, ModelSpec] = {}

    @classmethod
    def of(cls, *models: ResolvedModel) -> Specs:
        """Specs of these resolved models (tests and tools that hold no Config)."""
        specs = cls()
        for m in models:
            specs._cache[m.name] = spec_of(m)
        return specs

    def __call__(self, model: str) -> ModelSpec:
        spec = self._cache.get(model)
        if spec is None:
            spec = self._cache[model] = spec_of(self.cfg.model(model))
        return spec


class Event(NamedTuple):
    """The fields of a stored prediction the rollups count."""

    model: str
    model_version: str
    ts: float
    prediction: str
    status: str
    score_pred: float | None
    score_max: float | None
    entropy: float | None
    latency_seconds: float | None
    slices: dict[str, Any] | None
    label: str | None
    label_ts: float | None


#: Columns of `predictions` in Event order (rebuild and the label join read these).
EVENT_COLUMNS = Event._fields


def calibration_bin(conf: float, bins: int) -> int:
    """min(floor(conf * bins), bins - 1), as the SQL of the quality monitors had it."""
    return bins - 1 if conf >= 1.0 else math.floor(conf * bins)


class _ModelParts(NamedTuple):
    """What counting a model's events needs, looked up once per batch and model."""

    spec: ModelSpec
    fine: int
    sketch_key: Callable[[float], int]
    thresholds: tuple[float, ...]
    confidence_threshold: float
    flags: dict[tuple[str, str | None], tuple[int, ...]]  # (prediction, label) -> slice flags


@dataclass(slots=True)
class Delta:
    """Increments per rollup row key, accumulated over a batch."""

    requests: dict[tuple, list] = field(default_factory=dict)
    classes: dict[tuple, int] = field(default_factory=dict)
    calibration: dict[tuple, list] = field(default_factory=dict)
    slices: dict[tuple, list[int]] = field(default_factory=dict)
    good: dict[tuple, int] = field(default_factory=dict)
    sketches: dict[tuple, int] = field(default_factory=dict)
    # Events are counted into fine buckets only; `with_coarse` adds the coarse
    # ones from those (a batch has far fewer fine rows than events).
    coarse: dict[tuple[str, int], int] = field(default_factory=dict)  # (model, fine) -> coarse
    # What `add_prediction` (one event per call: rebuild) looked up per model.
    parts: dict[str, _ModelParts] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any((self.requests, self.classes, self.calibration, self.slices, self.good, self.sketches))

    # -- counting ---------------------------------------------------------------

    def add_prediction(self, ev: Event, spec: ModelSpec, admitted: set[tuple[str, str, str]]) -> None:
        """A newly stored prediction (with the label it was stored with, if any),
        counted in its fine bucket."""
        mp = self.parts.get(ev[0])
        if mp is not None and mp.spec is not spec:  # another spec for the model: look again
            del self.parts[ev[0]]
        self.add_predictions((ev,), lambda _model: spec, admitted, self.parts)

    def add_predictions(
        self, events: Iterable[tuple[Any, ...]], spec_of: Callable[[str], ModelSpec],
        admitted: set[tuple[str, str, str]], parts: dict[str, _ModelParts] | None = None,
    ) -> None:
        """Newly stored predictions (each with the label it was stored with, if any),
        counted in their fine buckets, in order.

        `events` are Events or plain tuples in Event's field order: the ingest hot
        path builds them column-wise, without a Python call per event. Per event
        this is a handful of dict updates; what depends on the model alone is
        looked up once per model (`_ModelParts`).
        """
        requests, classes, sketches, good = self.requests, self.classes, self.sketches, self.good
        slices = self.slices
        parts = {} if parts is None else parts
        for ev in events:
            model, version, ts, prediction, status, score_pred, score_max, entropy, lat, _, label, _ = ev
            mp = parts.get(model)
            if mp is None:
                mp = parts[model] = self._model_parts(model, spec_of(model))
            fine = mp.fine
            bucket = int(ts // fine) * fine
            key = (model, fine, bucket, version)
            r = requests.get(key)
            if r is None:
                r = requests[key] = [0, 0, 0, 0, 0.0, 0, 0, 0.0, 0, 0.0, ts]
            r[0] += 1
            if ts > r[10]:
                r[10] = ts
            if status != "ok":
                r[1] += 1
                continue
            if lat is not None:
                r[2] += 1
                sk = (model, fine, bucket, version, "latency", mp.sketch_key(lat))
                sketches[sk] = sketches.get(sk, 0) + 1
                for t in mp.thresholds:
                    if lat <= t:
                        gk = (model, fine, bucket, version, t)
                        good[gk] = good.get(gk, 0) + 1
            if score_max is not None:
                r[3] += 1
                r[4] += score_max
                if score_max < mp.confidence_threshold:
                    r[5] += 1
            if entropy is not None:
                r[6] += 1
                r[7] += entropy
            if score_pred is not None:
                r[8] += 1
                r[9] += score_pred
            ck = (model, fine, bucket, version, prediction, UNLABELLED if label is None else label)
            classes[ck] = classes.get(ck, 0) + 1
            attrs = mp.spec.slices
            if attrs:
                flags = mp.flags.get((prediction, label))
                if flags is None:
                    flags = mp.flags[(prediction, label)] = _slice_flags(
                        prediction, label, mp.spec.positive, selected_too=True)
                values = ev[9] or _NO_SLICES
                for attr in attrs:
                    v = values.get(attr)
                    if v is None:
                        v = MISSING_SLICE
                    else:
                        v = str(v)
                        if (model, attr, v) not in admitted:
                            v = OTHER_SLICE
                    sk = (model, fine, bucket, version, attr, v)
                    cur = slices.get(sk)
                    if cur is None:
                        slices[sk] = list(flags)
                    else:
                        cur[:] = map(add, cur, flags)
            if label is not None:
                self._add_labelled(key, self._label_parts(
                    ev if type(ev) is Event else Event._make(ev), label, ev[11], mp.spec))

    def _model_parts(self, model: str, spec: ModelSpec) -> _ModelParts:
        return _ModelParts(
            spec, self._fine(model, spec), sketch.key_function(spec.accuracy), spec.thresholds,
            spec.confidence_threshold, {},
        )

    def add_label(
        self, ev: Event, label: str, label_ts: float | None, spec: ModelSpec,
        admitted: set[tuple[str, str, str]],
    ) -> None:
        """A stored, unlabelled prediction (ev.label None) takes its label."""
        if ev.status != "ok":
            return
        values = self._slice_values(ev, spec, admitted)
        flags = _slice_flags(ev.prediction, label, spec.positive, selected_too=False) if values else ()
        labelled = self._label_parts(ev, label, label_ts, spec)
        fine = self._fine(ev.model, spec)
        key = (ev.model, fine, int(ev.ts // fine) * fine, ev.model_version)
        was = (*key, ev.prediction, UNLABELLED)
        self.classes[was] = self.classes.get(was, 0) - 1
        now = (*key, ev.prediction, label)
        self.classes[now] = self.classes.get(now, 0) + 1
        for attr_value in values:
            self._add_slice((*key, *attr_value), flags)
        self._add_labelled(key, labelled)

    def _fine(self, model: str, spec: ModelSpec) -> int:
        fine = spec.resolutions[0]
        if (model, fine) not in self.coarse:
            self.coarse[(model, fine)] = spec.resolutions[-1]
        return fine

    def with_coarse(self) -> Delta:
        """This delta plus the coarse buckets, each the sum of its fine ones."""
        out = Delta(**{name: dict(getattr(self, name)) for name in _COUNTERS})
        for name in _COUNTERS:
            mine, theirs = getattr(self, name), getattr(out, name)
            for key, value in mine.items():
                coarse = self.coarse.get((key[0], key[1]))
                if coarse is None or coarse == key[1]:
                    continue
                ck = (key[0], coarse, key[2] // coarse * coarse, *key[3:])
                cur = theirs.get(ck)
                if cur is None:
                    theirs[ck] = list(value) if isinstance(value, list) else value
                elif isinstance(value, list):
                    for i, v in enumerate(value):
                        cur[i] = max(cur[i], v) if name == "requests" and i == LAST_TS else cur[i] + v
                else:
                    theirs[ck] = cur + value
        return out

    @staticmethod
    def _label_parts(
        ev: Event, label: str, label_ts: float | None, spec: ModelSpec
    ) -> tuple[int | None, float, int, int | None]:
        """(calibration bin or None, confidence, correct, delay sketch key or None)."""
        conf = ev.score_pred
        b = None if conf is None else calibration_bin(conf, spec.bins)
        delay = None if label_ts is None else sketch.key(max(0.0, label_ts - ev.ts), spec.accuracy)
        return b, conf or 0.0, int(label == ev.prediction), delay

    def _add_labelled(self, key: tuple, parts: tuple[int | None, float, int, int | None]) -> None:
        b, conf, correct, delay = parts
        if b is not None:
            bk = (*key, b)
            cur = self.calibration.get(bk)
            if cur is None:
                cur = self.calibration[bk] = [0, 0.0, 0]
            cur[0] += 1
            cur[1] += conf
            cur[2] += correct
        if delay is not None:
            sk = (*key, "delay", delay)
            self.sketches[sk] = self.sketches.get(sk, 0) + 1

    @staticmethod
    def _slice_values(ev: Event, spec: ModelSpec, admitted: set[tuple[str, str, str]]) -> list[tuple[str, str]]:
        """(attribute, stored value) of each configured slice attribute."""
        if not spec.slices:
            return []
        raw = ev.slices or {}
        out = []
        for attr in spec.slices:
            v = raw.get(attr)
            if v is None:
                out.append((attr, MISSING_SLICE))
            else:
                v = str(v)
                out.append((attr, v if (ev.model, attr, v) in admitted else OTHER_SLICE))
        return out

    def _add_slice(self, sk: tuple, flags: tuple[int, ...]) -> None:
        cur = self.slices.get(sk)
        if cur is None:
            self.slices[sk] = list(flags)
        else:
            for i, f in enumerate(flags):
                cur[i] += f


_COUNTERS = ("requests", "classes", "calibration", "slices", "good", "sketches")
LAST_TS = 10  # rollup_requests.last_ts in a requests row: a max, not a sum


def _slice_flags(prediction: str, label: str | None, positive: str | None, selected_too: bool) -> tuple[int, ...]:
    """(n, selected, labelled, correct, positives, tp, negatives, fp) increments.

    For a prediction stored now, all eight; for a label joining a stored
    prediction (selected_too False) only the label-dependent ones.
    """
    sel = int(prediction == positive)
    n = 1 if selected_too else 0
    if label is None:
        return (n, sel if selected_too else 0, 0, 0, 0, 0, 0, 0)
    pos = int(label == positive)
    return (
        n, sel if selected_too else 0, 1, int(label == prediction),
        pos, pos * sel, 1 - pos, (1 - pos) * sel,
    )


# -- slice values ----------------------------------------------------------------------


def admit_slice_values(
    conn: sa.Connection, specs: Specs, events: Iterable[tuple[Any, ...]], now: float | None = None
) -> set[tuple[str, str, str]]:
    """The (model, attribute, value) triples of these events that have their own
    slice rows: values already admitted, plus new ones while the attribute has
    fewer than `rollups.slice_values_max`. Once an attribute is full it stays
    full (values are never removed), so a value is pooled as __other__ the same
    way at insert, at a later label and in a rebuild.
    """
    wanted: dict[tuple[str, str], set[str]] = {}
    events = events if isinstance(events, Sequence) else list(events)
    # Most batches hold models without slice attributes: one set of models, no loop over events.
    sliced = {m: attrs for m in set(map(itemgetter(0), events)) if (attrs := specs(m).slices)}
    if not sliced:
        return set()
    for ev in events:
        model, slices, status = ev[0], ev[9], ev[4]
        attrs = sliced.get(model)
        if not attrs or not slices or status != "ok":  # only status-ok rows have slice counts
            continue
        for a in attrs:
            v = slices.get(a)
            if v is not None:
                wanted.setdefault((model, a), set()).add(str(v))
    if not wanted:
        return set()
    sv = slice_values
    admitted: set[tuple[str, str, str]] = set()
    now = time.time() if now is None else now
    for (model, attr), values in wanted.items():
        known = {
            v for (v,) in conn.execute(
                sa.select(sv.c.value).where(sv.c.model == model, sv.c.attribute == attr)
            )
        }
        admitted.update((model, attr, v) for v in values & known)
        room = specs.slice_values_max - len(known)
        new = sorted(values - known)[: max(0, room)]
        if new:
            _insert_ignore(conn, sv, [{"model": model, "attribute": attr, "value": v, "first_seen": now} for v in new])
            admitted.update((model, attr, v) for v in new)
    return admitted


def _insert_ignore(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(table).on_conflict_do_nothing(), rows)


# -- applying a delta ------------------------------------------------------------------

_ROWS_JSON = msgspec.json.Encoder()
_SQL: dict[tuple[str, str, int], str] = {}


def _columns(table: sa.Table) -> tuple[list[str], list[str]]:
    keys = [c.name for c in table.primary_key.columns]
    values = [c.name for c in table.columns if not c.primary_key]
    return keys, values


def _set_clause(table: sa.Table, dialect: str, quote: Any) -> str:
    _, values = _columns(table)
    t = quote(table.name)
    parts = []
    for v in values:
        q = quote(v)
        if v == "last_ts":
            fn = "GREATEST" if dialect == "postgresql" else "MAX"
            parts.append(f"{q} = {fn}({t}.{q}, excluded.{q})")
        else:
            parts.append(f"{q} = {t}.{q} + excluded.{q}")
    return ", ".join(parts)


def _pg_cast(column: sa.Column) -> str:
    if isinstance(column.type, sa.Float):
        return "float8"
    if isinstance(column.type, sa.Integer):
        return "int8"
    return "text"


def upsert_add(conn: sa.Connection, table: sa.Table, rows: Sequence[tuple[Any, ...]]) -> None:
    """Add rows (primary key columns, then value columns, in table order) to a
    rollup table: insert, or add to the stored counters (last_ts: the max)."""
    if not rows:
        return
    dialect = conn.dialect.name
    quote = conn.dialect.identifier_preparer.quote
    keys, values = _columns(table)
    cols = keys + values
    # One lock order for concurrent writers. Keys are unique within a delta, so whole
    # rows sort as their keys do (C-level tuple comparison, no key function).
    rows = sorted(rows)
    conflict = (
        f"ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO UPDATE SET "
        f"{_set_clause(table, dialect, quote)}"
    )
    names = ", ".join(quote(c) for c in cols)
    if dialect == "postgresql":
        sql = _SQL.get((dialect, table.name, 0))
        if sql is None:
            select = ", ".join(f"(r->>{i})::{_pg_cast(table.c[c])}" for i, c in enumerate(cols))
            sql = _SQL[(dialect, table.name, 0)] = (
                f"INSERT INTO {quote(table.name)} ({names}) "
                f"SELECT {select} FROM jsonb_array_elements(%s::jsonb) AS r {conflict}"
            )
        # msgspec: the same values as the json module's text (floats as their shortest
        # repr), each read back by its cast; several times faster.
        conn.exec_driver_sql(sql, (_ROWS_JSON.encode(rows).decode(),))
        return
    sql = _SQL.get((dialect, table.name, 1))
    if sql is None:
        row = "(" + ", ".join("?" for _ in cols) + ")"
        sql = _SQL[(dialect, table.name, 1)] = f"INSERT INTO {quote(table.name)} ({names}) VALUES {row} {conflict}"
    # executemany of one prepared statement: SQLite runs it row by row in C
    conn.exec_driver_sql(sql, list(rows))


def apply(conn: sa.Connection, delta: Delta) -> None:
    """Write a batch's increments (fine and coarse buckets) in the caller's transaction."""
    delta = delta.with_coarse()
    upsert_add(conn, rollup_requests, [(*k, *v) for k, v in delta.requests.items()])
    upsert_add(conn, rollup_classes, [(*k, n) for k, n in delta.classes.items() if n])
    upsert_add(conn, rollup_calibration, [(*k, *v) for k, v in delta.calibration.items()])
    upsert_add(conn, rollup_slices, [(*k, *v) for k, v in delta.slices.items() if any(v)])
    upsert_add(conn, rollup_latency_good, [(*k, n) for k, n in delta.good.items()])
    upsert_add(conn, rollup_sketches, [(*k, n) for k, n in delta.sketches.items()])


def count(
    conn: sa.Connection,
    specs: Specs,
    inserted: Sequence[tuple[Any, ...]] = (),
    labelled: Sequence[tuple[Event, str, float | None]] = (),
) -> Delta:
    """The delta of newly inserted predictions and of labels joined to stored ones, applied.

    `inserted`: Events, or plain tuples in Event's field order."""
    delta = Delta()
    if not inserted and not labelled:
        return delta
    admitted = admit_slice_values(conn, specs, [*inserted, *(e for e, _, _ in labelled)])
    delta.add_predictions(inserted, specs, admitted)
    for ev, label, label_ts in labelled:
        delta.add_label(ev, label, label_ts, specs(ev.model), admitted)
    apply(conn, delta)
    return delta
