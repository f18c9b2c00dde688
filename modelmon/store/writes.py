"""Idempotent batch writes shared by the Kafka consumer and the HTTP feedback API.

Every write is INSERT ... ON CONFLICT DO NOTHING on the natural key, so a
redelivered batch (after a crash, a rebalance or a database outage) can be
written again without storing anything twice: first write wins. A duplicate
whose content digest differs from what was stored is a *conflict* and is
recorded in `ingest_conflicts`.

Predictions are keyed (model, request_id, ts) because PostgreSQL partitions
them by ts: each batch first looks its requests up by (model, request_id),
so a repeat with another timestamp is a conflict like any other. Only two
ingest transactions writing the same request with different timestamps at
the same moment, neither seeing the other, could both store it; that takes a
model service sending one request id twice with two timestamps to two
partitions at once.

Labels are joined in the same transaction both ways: new predictions take the
label of feedback already stored, and new feedback labels stored predictions.
Two concurrent transactions (one with the prediction, one with its feedback)
cannot see each other; `reconcile_labels` closes that gap afterwards.

On PostgreSQL a batch's predictions and feedback go to the server through COPY
into the session's staging tables (`modelmon.store.staging`), and one
INSERT ... SELECT each moves them: for predictions that one statement also
skips stored requests and joins stored labels. SQLite takes multi-row VALUES.
What happens to the events not inserted (duplicate or conflict, by digest) is
decided the same way on both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import itemgetter
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from modelmon.contract import Feedback, Prediction
from modelmon.store import columns, driver, jsontext, rollups, staging
from modelmon.store.columns import first_items as columns_first
from modelmon.store.rollups import EVENT_COLUMNS, Event, Specs
from modelmon.store.tables import dead_letters as dead_letters_t
from modelmon.store.tables import feedback as feedback_t
from modelmon.store.tables import ingest_conflicts
from modelmon.store.tables import predictions as predictions_t

# Kafka header naming who produced a feedback message: the API marks what it forwards,
# so a label POSTed over HTTP reads `source: http` in the trace however it was stored.
SOURCE_HEADER = "modelmon-source"
HEADER_SOURCES = frozenset({"http"})  # values ingest records; anything else reads as kafka


class Position(msgspec.Struct, frozen=True, gc=False):
    """Where an event came from in Kafka (the audit trace).

    `source` is the producer's own word for it (SOURCE_HEADER); None leaves the
    batch's `source` argument in charge. A Struct untracked by the garbage
    collector (it holds no references that could form a cycle): one is built per
    consumed message, and cheaper than a dataclass to build and to keep.
    """

    topic: str
    partition: int
    offset: int
    source: str | None = None


def header_source(record: Any) -> str:
    """The source a Kafka record declares in its SOURCE_HEADER, else "kafka"."""
    headers = getattr(record, "headers", None)
    if not headers:  # the common case, once per consumed message
        return "kafka"
    for key, value in headers:
        if key == SOURCE_HEADER and isinstance(value, bytes | bytearray):
            text = bytes(value).decode("utf-8", "replace")
            if text in HEADER_SOURCES:
                return text
    return "kafka"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    detail: str
    payload: bytes | None  # already truncated by the caller
    payload_bytes: int  # size before truncation
    source: str  # kafka | http
    position: Position | None


@dataclass(slots=True)
class BatchOutcome:
    labels_joined: int = 0
    # Per kind ("prediction" / "feedback"): identical redeliveries (nothing written)
    # and conflicts (same key, other content; recorded in ingest_conflicts).
    duplicates_by_kind: dict[str, int] = field(default_factory=dict)
    conflicts_by_kind: dict[str, int] = field(default_factory=dict)
    # The events actually stored (not duplicates), for per-model metrics.
    stored_predictions: list[Prediction] = field(default_factory=list)
    stored_feedback: list[Feedback] = field(default_factory=list)
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)  # stored, by reason

    @property
    def predictions_stored(self) -> int:
        return len(self.stored_predictions)

    @property
    def feedback_stored(self) -> int:
        return len(self.stored_feedback)

    @property
    def duplicates(self) -> int:
        return sum(self.duplicates_by_kind.values())

    @property
    def conflicts(self) -> int:
        return sum(self.conflicts_by_kind.values())

    @property
    def dead_letters_stored(self) -> int:
        return sum(self.dead_letter_reasons.values())

    def merge(self, part: BatchOutcome) -> None:
        """Add another outcome's counts (the writer's event-by-event fallback)."""
        self.labels_joined += part.labels_joined
        for mine, theirs in (
            (self.duplicates_by_kind, part.duplicates_by_kind),
            (self.conflicts_by_kind, part.conflicts_by_kind),
            (self.dead_letter_reasons, part.dead_letter_reasons),
        ):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n
        self.stored_predictions.extend(part.stored_predictions)
        self.stored_feedback.extend(part.stored_feedback)


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"modelmon's store supports SQLite and PostgreSQL, not {name}")


# Rows per multi-row INSERT: 500 x 21 columns stays under SQLite's and
# PostgreSQL's bind-parameter limits.
_ROWS_PER_INSERT = 500
_SQL_CACHE: dict[tuple[str, tuple[str, ...], int], str] = {}


def _insert_returning_keys(
    conn: sa.Connection, table: sa.Table, names: Sequence[str], values: Sequence[Sequence[Any]]
) -> set[tuple[str, str]]:
    """INSERT ... ON CONFLICT (key) DO NOTHING RETURNING the inserted (model, request_id),
    of rows given as columns: `values` holds one sequence per name in `names`.

    PostgreSQL: COPY into the session's staging table, then one INSERT ... SELECT
    (`modelmon.store.staging`). SQLite: multi-row VALUES (JSON columns already as
    text), hand-built rather than SQLAlchemy's executemany, whose per-row parameter
    processing costs more on the ingest hot path than the database does; the
    parameters are laid out in C (`columns.flat`), the keys come back as the driver's
    tuples (`modelmon.store.driver`).
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        quote = conn.dialect.identifier_preparer.quote
        cols = ", ".join(quote(c) for c in names)

        def insert(stage: str) -> str:
            return (f"INSERT INTO {quote(table.name)} ({cols}) SELECT {cols} FROM {stage} "
                    f"ORDER BY {_KEY_ORDER} {_conflict_clause(quote, table)}")

        return set(staging.copy_and_insert(conn, table, names, values, insert))
    if dialect != "sqlite":
        raise NotImplementedError(f"modelmon's store supports SQLite and PostgreSQL, not {dialect}")
    inserted: set[tuple[str, str]] = set()
    n = len(values[0])
    for start in range(0, n, _ROWS_PER_INSERT):
        count = min(_ROWS_PER_INSERT, n - start)
        key = (table.name, tuple(names), count)
        sql = _SQL_CACHE.get(key)
        if sql is None:
            sql = _SQL_CACHE[key] = _values_insert_sql(conn, table, names, count)
        inserted.update(driver.fetch_all(conn, sql, columns.flat(values, start, start + count)))
    return inserted


# Staged rows are inserted in key order: concurrent writers of overlapping batches
# (a batch redelivered after a rebalance while its first reader still writes it) then
# take their unique-index locks in one order and cannot deadlock, as rollups.upsert_add.
_KEY_ORDER = "model, request_id"


def _pg_insert_new_predictions(
    conn: sa.Connection, values: Sequence[Sequence[Any]]
) -> dict[tuple[str, str], tuple[str | None, float | None]]:
    """Insert the predictions (columns in _STAGED_PREDICTION_COLUMNS order) whose
    (model, request_id) is not stored yet, each with the label of its stored
    feedback; (model, request_id) -> (label, label_ts) of those inserted.

    One statement over the staging table: the lookup of stored requests, the label
    join and the insert. Both probes are LATERAL ... LIMIT 1, one index probe per
    staged row (see `_lookup`). Known weakness, as before COPY: on a partition with
    no statistics yet, the planner may probe through its (model, ts) index instead
    of the primary key, reading every row of the model per probe, until autovacuum
    first analyzes the partition.
    """
    quote = conn.dialect.identifier_preparer.quote
    cols = _STAGED_PREDICTION_COLUMNS
    names = ", ".join(quote(c) for c in cols)
    selected = ", ".join(f"s.{quote(c)}" for c in cols)

    def insert(stage: str) -> str:
        return (
            f"INSERT INTO predictions ({names}, label, label_ts) "
            f"SELECT {selected}, f.label, f.ts FROM {stage} AS s "
            "LEFT JOIN LATERAL (SELECT 1 AS hit FROM predictions AS p "
            "WHERE p.model = s.model AND p.request_id = s.request_id LIMIT 1) AS e ON true "
            "LEFT JOIN LATERAL (SELECT f.label, f.ts FROM feedback AS f "
            "WHERE f.model = s.model AND f.request_id = s.request_id LIMIT 1) AS f ON true "
            f"WHERE e.hit IS NULL ORDER BY {_KEY_ORDER} "
            f"{_conflict_clause(quote, predictions_t)}, label, label_ts"
        )

    returned = staging.copy_and_insert(conn, predictions_t, cols, values, insert)
    return {(m, r): (label, label_ts) for m, r, label, label_ts in returned}


def _conflict_clause(quote: Any, table: sa.Table) -> str:
    # predictions: its primary key includes ts (the partition key on PostgreSQL);
    # feedback: unique (model, request_id).
    keys = ("model", "request_id", "ts") if table is predictions_t else ("model", "request_id")
    return (
        f"ON CONFLICT ({', '.join(quote(k) for k in keys)}) DO NOTHING "
        f"RETURNING {quote('model')}, {quote('request_id')}"
    )


def _values_insert_sql(conn: sa.Connection, table: sa.Table, columns: Sequence[str], n: int) -> str:
    quote = conn.dialect.identifier_preparer.quote
    row = "(" + ", ".join("?" for _ in columns) + ")"
    return (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES {', '.join([row] * n)} {_conflict_clause(quote, table)}"
    )


def _pos(position: Position | None) -> tuple[str | None, int | None, int | None]:
    if position is None:
        return None, None, None
    return position.topic, position.partition, position.offset


def _by_model(keys: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for model, request_id in keys:
        out.setdefault(model, []).append(request_id)
    return out


_REST = itemgetter(slice(1, None))


def _lookup(
    conn: sa.Connection, table: sa.Table, keys: Iterable[tuple[str, str]], *columns: sa.Column
) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(model, request_id) -> selected columns, for the keys that exist.

    One statement per model, its request ids in one JSON parameter (no statement
    with thousands of placeholders), probed key by key through the (model,
    request_id) index; the rows come back as the driver's tuples (JSON columns
    decoded as SQLAlchemy would).
    """
    found: dict[tuple[str, str], tuple[Any, ...]] = {}
    sql = _lookup_sql(conn, table, columns)
    pg = conn.dialect.name == "postgresql"
    decode = [n for n, c in enumerate(columns, 1) if isinstance(c.type, sa.JSON)] if not pg else []
    for model, ids in _by_model(keys).items():
        params = (jsontext.encode(ids), model) if pg else (model, jsontext.encode(ids))
        rows = driver.fetch_all(conn, sql, params)
        if decode:  # SQLite keeps JSON as text
            rows = [_decoded(row, decode) for row in rows]
        keys_found = zip(repeat(model), map(columns_first, rows))  # noqa: B905 (repeat is endless)
        found.update(zip(keys_found, map(_REST, rows), strict=False))
    return found


def _decoded(row: tuple[Any, ...], at: Sequence[int]) -> tuple[Any, ...]:
    out = list(row)
    for n in at:
        if out[n] is not None:
            out[n] = json.loads(out[n])
    return tuple(out)


def _lookup_sql(conn: sa.Connection, table: sa.Table, columns: Sequence[sa.Column]) -> str:
    if conn.dialect.name == "postgresql":
        return _pg_lookup_sql(conn, table, columns)
    key = ("sqlite-lookup", table.name, ",".join(c.name for c in columns))
    sql = _LOOKUP_CACHE.get(key)
    if sql is None:
        quote = conn.dialect.identifier_preparer.quote
        cols = ", ".join(quote(c.name) for c in columns)
        sql = _LOOKUP_CACHE[key] = (
            f"SELECT {quote('request_id')}, {cols} FROM {quote(table.name)} "
            f"WHERE {quote('model')} = ? AND {quote('request_id')} IN (SELECT value FROM json_each(?))"
        )
    return sql


def _pg_lookup_sql(conn: sa.Connection, table: sa.Table, columns: Sequence[sa.Column]) -> str:
    key = ("postgresql-lookup", table.name, ",".join(c.name for c in columns))
    sql = _LOOKUP_CACHE.get(key)
    if sql is None:
        quote = conn.dialect.identifier_preparer.quote
        cols = ", ".join(f"t.{quote(c.name)}" for c in columns)
        sql = _LOOKUP_CACHE[key] = (
            # LATERAL fixes the plan: with `request_id IN (SELECT
            # jsonb_array_elements_text(...))` and fresh table statistics the
            # planner chose a nested loop over every row of the model times
            # every key, quadratic (0.8 s per 2,000-key batch at 2,000 rows).
            f"SELECT k.rid, {cols} FROM jsonb_array_elements_text(%s::jsonb) AS k(rid) "
            f"CROSS JOIN LATERAL (SELECT * FROM {quote(table.name)} AS t "
            # LIMIT (the key is unique anyway) keeps PostgreSQL from flattening
            # the subquery back into a join it could plan the quadratic way.
            f"WHERE t.{quote('model')} = %s AND t.{quote('request_id')} = k.rid LIMIT 1) AS t"
        )
    return sql


_LOOKUP_CACHE: dict[tuple[str, str, str], str] = {}


def _dedupe(items: Sequence[tuple[Any, Position | None]]) -> tuple[
    dict[tuple[str, str], tuple[Any, Position | None]], list[tuple[Any, Position | None]]
]:
    """First occurrence per (model, request_id) wins; the rest are returned as repeats."""
    keys = columns.keys(list(map(columns_first, items)))
    first = dict(zip(keys, items, strict=True))
    if len(first) == len(items):  # no key twice: the usual batch, built in C
        return first, []
    first = {}
    repeats: list[tuple[Any, Position | None]] = []
    for key, item in zip(keys, items, strict=True):
        if key in first:
            repeats.append(item)
        else:
            first[key] = item
    return first, repeats


def _classify_losers(
    conn: sa.Connection,
    kind: str,
    table: sa.Table,
    losers: list[tuple[Any, Position | None]],
    known_digests: dict[tuple[str, str], str],
    now: float,
) -> tuple[int, int]:
    """Split events that were not inserted into (duplicates, conflicts)."""
    if not losers:
        return 0, 0
    missing = {(e.model, e.request_id) for e, _ in losers} - known_digests.keys()
    if missing:
        for key, (d,) in _lookup(conn, table, missing, table.c.digest).items():
            known_digests[key] = d
    duplicates = 0
    conflict_rows: list[dict[str, Any]] = []
    for event, position in losers:
        stored = known_digests.get((event.model, event.request_id))
        if stored is None or stored == event.digest:
            # stored is None only if a concurrent transaction deleted it; treat as redelivery.
            duplicates += 1
            continue
        topic, partition, offset = _pos(position)
        conflict_rows.append(
            {
                "kind": kind,
                "model": event.model,
                "request_id": event.request_id,
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "stored_digest": stored,
                "new_digest": event.digest,
                "received_at": now,
            }
        )
    conflicts = 0
    if conflict_rows:
        stmt = (
            _insert(conn, ingest_conflicts)
            .on_conflict_do_nothing()
            .returning(ingest_conflicts.c.id)
        )
        conflicts = len(conn.execute(stmt, conflict_rows).all())
        # A conflicting message redelivered from the same offset was already
        # recorded: that repeat is a redelivery, not a new conflict.
        duplicates += len(conflict_rows) - conflicts
    return duplicates, conflicts


_FEEDBACK_COLUMNS = (
    "model", "request_id", "label", "ts", "source", "topic", "partition", "offset", "digest",
    "ingested_at",
)
# A prediction's attributes in the order of its staged columns (then its position,
# digest, ingested_at); columns 5, 11 and 12 are JSON.
_PREDICTION_FIELDS = (
    "model", "model_version", "request_id", "ts", "prediction", "scores", "score_pred",
    "score_max", "entropy", "latency_seconds", "status", "slices", "features", "schema_version",
    "digest",
)
_JSON_AT = (5, 11, 12)
_STAGED_PREDICTION_COLUMNS = (*_PREDICTION_FIELDS[:14], "topic", "partition", "offset", "digest",
                              "ingested_at")
_PREDICTION_COLUMNS = (*_STAGED_PREDICTION_COLUMNS, "label", "label_ts")
# Event's fields (rollups) among the staged columns: model, model_version, ts,
# prediction, status, score_pred, score_max, entropy, latency_seconds, slices.
_EVENT_AT = (0, 1, 3, 4, 10, 6, 7, 8, 9, 11)


def _settle(
    conn: sa.Connection,
    kind: str,
    table: sa.Table,
    first: dict[tuple[str, str], tuple[Any, Position | None]],
    repeats: list[tuple[Any, Position | None]],
    inserted: set[tuple[str, str]],
    now: float,
    out: BatchOutcome,
) -> list[Any]:
    """After the insert: count the events not inserted as duplicates or conflicts; the stored ones."""
    if len(inserted) == len(first):  # every first occurrence went in (inserted is a subset)
        losers = repeats
        stored = list(map(columns_first, first.values()))
    else:
        losers = [item for key, item in first.items() if key not in inserted] + repeats
        stored = [ev for key, (ev, _) in first.items() if key in inserted]
    # What this batch stored for the keys of its repeats (the others are looked up).
    repeated = set(columns.keys(list(map(columns_first, repeats)))) & inserted
    known = {key: first[key][0].digest for key in repeated}
    dup, conf = _classify_losers(conn, kind, table, losers, known, now)
    out.duplicates_by_kind[kind] = dup
    out.conflicts_by_kind[kind] = conf
    return stored


def _write_feedback(
    conn: sa.Connection,
    items: Sequence[tuple[Feedback, Position | None]],
    source: str,
    now: float,
    out: BatchOutcome,
) -> list[Feedback]:
    first, repeats = _dedupe(items)
    inserted: set[tuple[str, str]] = set()
    if first:
        fbs = list(map(columns_first, first.values()))
        topic, partition, offset, origin = columns.positions(list(map(_SECOND, first.values())))
        model, request_id, label, ts, digest = columns.fields(
            fbs, ("model", "request_id", "label", "ts", "digest")
        )
        values = [model, request_id, label, ts, [s or source for s in origin], topic, partition,
                  offset, digest, [now] * len(fbs)]
        inserted = _insert_returning_keys(conn, feedback_t, _FEEDBACK_COLUMNS, values)
    out.stored_feedback = _settle(conn, "feedback", feedback_t, first, repeats, inserted, now, out)
    return out.stored_feedback


def _prediction_values(
    items: Iterable[tuple[Prediction, Position | None]], now: float
) -> list[Sequence[Any]]:
    """Predictions as columns in _STAGED_PREDICTION_COLUMNS order (JSON columns as objects)."""
    items = list(items)
    cols = columns.fields(list(map(columns_first, items)), _PREDICTION_FIELDS)
    topic, partition, offset, _ = columns.positions(list(map(_SECOND, items)))
    return [*cols[:14], topic, partition, offset, cols[14], [now] * len(items)]


def _events(
    values: Sequence[Sequence[Any]], label: Sequence[Any], label_ts: Sequence[Any],
    keep: Sequence[bool] | None = None,
) -> list[tuple[Any, ...]]:
    """The rollup events (tuples in Event's field order) of staged prediction columns,
    with their labels; only the rows `keep` marks, if given."""
    cols = [*(values[n] for n in _EVENT_AT), label, label_ts]
    if keep is not None:
        cols = [list(compress(c, keep)) for c in cols]
    return columns.rows(cols)


_SECOND = itemgetter(1)
_NO_LABEL = (None, None)


def _write_predictions(
    conn: sa.Connection,
    items: Sequence[tuple[Prediction, Position | None]],
    now: float,
    out: BatchOutcome,
) -> tuple[set[tuple[str, str]], list[tuple[Any, ...]]]:
    """Insert; the keys inserted and their rollup events (with the label they took)."""
    first, repeats = _dedupe(items)
    inserted: set[tuple[str, str]] = set()
    events: list[tuple[Any, ...]] = []
    if first and conn.dialect.name == "postgresql":
        values = _prediction_values(first.values(), now)
        taken = _pg_insert_new_predictions(conn, values)
        inserted = set(taken)
        if taken:  # (a redelivered batch: nothing)
            labels = [taken.get(key, _NO_LABEL) for key in first]
            label, label_ts = (list(c) for c in zip(*labels, strict=True))
            out.labels_joined += len(taken) - list(map(columns_first, taken.values())).count(None)
            keep = None if len(taken) == len(first) else [key in taken for key in first]
            events = _events(values, label, label_ts, keep)
    elif first:
        # The key includes ts, so a repeat of a stored prediction with another
        # timestamp would not conflict: look the requests up first, and insert
        # only new ones (a repeat is then a duplicate or a conflict as usual).
        stored = _lookup(conn, predictions_t, first.keys(), predictions_t.c.digest)
        new = {key: item for key, item in first.items() if key not in stored} if stored else first
        # Feedback stored earlier (or earlier in this transaction) labels the row at insert.
        labels = _lookup(conn, feedback_t, new.keys(), feedback_t.c.label, feedback_t.c.ts)
        if new:
            values = _prediction_values(new.values(), now)
            if labels:
                label, label_ts = (list(c) for c in zip(
                    *(labels.get(key, _NO_LABEL) for key in new), strict=True))
            else:
                label = label_ts = [None] * len(new)
            text = [jsontext.encode_column(v) if n in _JSON_AT else v for n, v in enumerate(values)]
            inserted = _insert_returning_keys(
                conn, predictions_t, _PREDICTION_COLUMNS, [*text, label, label_ts]
            )
            out.labels_joined += len(inserted & labels.keys())
            if inserted:
                keep = None if len(inserted) == len(new) else [key in inserted for key in new]
                events = _events(values, label, label_ts, keep)
    out.stored_predictions = _settle(
        conn, "prediction", predictions_t, first, repeats, inserted, now, out
    )
    return inserted, events


_EVENT_SELECT = tuple(predictions_t.c[c] for c in EVENT_COLUMNS)


def _label_existing(
    conn: sa.Connection, stored_feedback: list[Feedback], skip: set[tuple[str, str]]
) -> list[tuple[Event, str, float | None]]:
    """Label predictions stored before this batch with this batch's new feedback;
    the labelled predictions (as stored before) with their new label, for the rollups."""
    todo = [fb for fb, key in zip(stored_feedback, columns.keys(stored_feedback), strict=True)
            if key not in skip]
    if not todo:
        return []
    # Only predictions that exist and are unlabelled: this keeps the UPDATE
    # executemany small when most feedback precedes its prediction, and gives
    # an exact count without relying on executemany rowcounts.
    open_keys = _lookup(conn, predictions_t, columns.keys(todo), *_EVENT_SELECT)
    labelled: list[tuple[Event, str, float | None]] = []
    params = []
    for fb in todo:
        row = open_keys.get((fb.model, fb.request_id))
        if row is None or row[-2] is not None:  # no such prediction, or labelled already
            continue
        labelled.append((Event._make(row), fb.label, fb.ts))
        params.append((fb.label, fb.ts, fb.model, fb.request_id))
    if not params:
        return []
    if conn.dialect.name == "postgresql":
        # Only the rows this statement labelled count in the rollups (a
        # concurrent reconcile_labels may have labelled one meanwhile).
        done = set(driver.fetch_all(
            conn,
            "UPDATE predictions SET label = r->>0, label_ts = (r->>1)::float8 "
            "FROM jsonb_array_elements(%s::jsonb) AS r "
            "WHERE model = r->>2 AND request_id = r->>3 AND label IS NULL "
            "RETURNING model, request_id",
            (jsontext.encode(params),),
        ))
        return [item for item, (_, _, m, r) in zip(labelled, params, strict=True) if (m, r) in done]
    else:
        conn.exec_driver_sql(
            "UPDATE predictions SET label = ?, label_ts = ? "
            "WHERE model = ? AND request_id = ? AND label IS NULL",
            params,
        )
    return labelled


_DEFAULT_SPECS: Specs | None = None


def default_specs() -> Specs:
    """Rollup specs of the built-in defaults (callers with a configuration pass their own)."""
    global _DEFAULT_SPECS
    if _DEFAULT_SPECS is None:
        _DEFAULT_SPECS = Specs()
    return _DEFAULT_SPECS


def write_batch(
    conn: sa.Connection,
    predictions: Sequence[tuple[Prediction, Position | None]],
    feedback: Sequence[tuple[Feedback, Position | None]],
    dead_letters: Sequence[DeadLetter],
    source: str = "kafka",
    now: float | None = None,
    specs: Specs | None = None,
) -> BatchOutcome:
    """Store one batch inside the caller's transaction; safe to repeat after a failure.

    The rollups of what this transaction inserted or labelled are updated in it too.
    """
    now = time.time() if now is None else now
    out = BatchOutcome()
    # Feedback first, so predictions in the same batch find their label at insert.
    new_feedback = _write_feedback(conn, feedback, source, now, out)
    new_keys, new_events = _write_predictions(conn, predictions, now, out)
    labelled = _label_existing(conn, new_feedback, new_keys)
    out.labels_joined += len(labelled)
    rollups.count(conn, specs or default_specs(), new_events, labelled)
    out.dead_letter_reasons = _write_dead_letters(conn, dead_letters, now)
    return out


def _write_dead_letters(
    conn: sa.Connection, letters: Sequence[DeadLetter], now: float
) -> dict[str, int]:
    """Store dead letters (once per Kafka position); stored count by reason."""
    if not letters:
        return {}
    rows = []
    for d in letters:
        topic, partition, offset = _pos(d.position)
        rows.append(
            {
                "source": d.source,
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "reason": d.reason,
                "detail": d.detail,
                "payload": d.payload,
                "payload_bytes": d.payload_bytes,
                "payload_truncated": (0 if d.payload is None else len(d.payload)) < d.payload_bytes,
                "received_at": now,
            }
        )
    stmt = (
        _insert(conn, dead_letters_t)
        .on_conflict_do_nothing()
        .returning(dead_letters_t.c.reason)
    )
    counts: dict[str, int] = {}
    for (reason,) in conn.execute(stmt, rows):
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def reconcile_labels(
    conn: sa.Connection, since_ingested_at: float, specs: Specs | None = None
) -> int:
    """Label predictions whose feedback (ingested since the time) was missed.

    Needed when the prediction and its feedback were written by two concurrent
    transactions, neither seeing the other. Call it with the start of the
    previous pass minus a margin longer than one ingest transaction (e.g. 300 s);
    it is idempotent. The rollups move with the labels. Returns the number of
    predictions labelled.
    """
    fb = feedback_t.alias("fb")
    p = predictions_t
    stmt = (
        sa.select(*(p.c[c] for c in EVENT_COLUMNS), p.c.request_id, fb.c.label, fb.c.ts)
        .join(fb, sa.and_(fb.c.model == p.c.model, fb.c.request_id == p.c.request_id))
        .where(fb.c.ingested_at >= since_ingested_at, p.c.label.is_(None))
    )
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=p)  # a concurrent ingest cannot label them meanwhile
    labelled: list[tuple[Event, str, float | None]] = []
    params = []
    for row in conn.execute(stmt):
        ev = Event(*row[: len(EVENT_COLUMNS)])
        rid, label, label_ts = row[len(EVENT_COLUMNS) :]
        labelled.append((ev, label, label_ts))
        params.append({"l": label, "t": label_ts, "m": ev.model, "r": rid})
    if params:
        conn.execute(
            p.update()
            .where(p.c.model == sa.bindparam("m"), p.c.request_id == sa.bindparam("r"))
            .values(label=sa.bindparam("l"), label_ts=sa.bindparam("t")),
            params,
        )
        rollups.count(conn, specs or default_specs(), (), labelled)
    return len(params)
