"""Feature references and window samples: the two sides the feature families compare.

A **reference** is one stored table of input rows per model (validation data,
or a frozen production window), kept in `feature_references` as one
column-oriented payload (modelmon.store.columnar) so that loading 50k rows x
50 features takes a fraction of a second. Setting a new one replaces the old.

A **window sample** is a bounded, deterministic sample of the predictions of a
window that carry features: the `limit` rows with the smallest `digest`. The
digest is a SHA-256 of the whole prediction message (modelmon.contract.digest),
request id and timestamp included, so its order is a pseudo-random permutation
of the window's rows that has nothing to do with their feature values, time or
class: the first `limit` rows in that order are a simple random sample without
replacement (every row equally likely, every subset of that size equally
likely), yet the same window always gives the same rows, whatever order they
were inserted in. The sample of a sub-window is the bottom of the same order,
so nested windows share rows instead of being independent draws.

The sample's keys come from the partial index `ix_predictions_with_features`
on (model, ts, digest, model_version) WHERE features IS NOT NULL: the
database walks the window's index entries, keeps the `limit` smallest digests
(a bounded top-N sort), and only those rows are read in full, with their
labels joined from `feedback`. Memory is bounded by `limit` whatever the window.
On PostgreSQL the walk (and the count of rows with features) is an index-only
scan. SQLite (3.40, Debian 12's) cannot treat a partial index as covering when
its predicate's column is not in the index: it still visits each row of the
window to re-check `features IS NOT NULL`, so there the cost grows with the
window (see `python -m bench features`); the count is skipped when the sample
was not cut, since it then holds every such row.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from modelmon.store import columnar
from modelmon.store.tables import feature_references, feedback, predictions

_FEATURE = "f:"  # payload block prefix of a feature column (predictions/labels are unprefixed)


def _json_decoder() -> Callable[[str], Any]:
    """msgspec's decoder when installed (the event contract uses it; about twice as fast
    as json.loads on the sample's feature objects), falling back to json.loads for
    anything it refuses; json.loads alone otherwise."""
    try:
        import msgspec
    except ImportError:
        return json.loads
    fast = msgspec.json.Decoder()

    def decode(text: str) -> Any:
        try:
            return fast.decode(text)
        except msgspec.DecodeError:
            return json.loads(text)

    return decode


_decode = _json_decoder()


@dataclass(frozen=True)
class FeatureReference:
    """A model's reference rows, column by column; values keep their JSON types."""

    model: str
    columns: dict[str, list[Any]]  # feature name -> values (None = missing), all the same length
    predictions: list[str | None] | None  # normalized class labels (contract.normalize_label)
    labels: list[str | None] | None
    source: str  # file name, or "window:<model> <from>..<to>"
    source_rows: int  # rows in the source before sampling down
    created_at: float

    def __post_init__(self) -> None:
        lengths = {len(v) for v in self.columns.values()}
        lengths |= {len(v) for v in (self.predictions, self.labels) if v is not None}
        if len(lengths) > 1:
            raise ValueError(f"reference of {self.model!r}: columns of different lengths {sorted(lengths)}")

    @property
    def rows(self) -> int:
        for values in (*self.columns.values(), self.predictions, self.labels):
            if values is not None:
                return len(values)
        return 0


@dataclass(frozen=True)
class WindowSample:
    """Up to `limit` of a window's predictions with features, smallest digest first."""

    columns: dict[str, list[Any]]  # union of feature names seen in the sampled rows; missing -> None
    request_ids: list[str]
    predictions: list[str]
    labels: list[str | None]  # joined from the feedback table (None = no label yet)
    with_features: int  # predictions in the window that carry features (not just sampled)
    total: int  # all predictions in the window
    columns_left_out: int = 0  # feature names seen but over `max_columns` (see sample_window)

    @property
    def rows(self) -> int:
        return len(self.request_ids)


# -- references ------------------------------------------------------------------------


def set_reference(conn: sa.Connection, model: str, ref: FeatureReference) -> None:
    """Store `ref` as the model's reference, replacing any earlier one (caller's transaction)."""
    if ref.model != model:
        raise ValueError(f"a reference of {ref.model!r} cannot be stored for {model!r}")
    blocks: dict[str, list[Any] | None] = {_FEATURE + k: v for k, v in ref.columns.items()}
    blocks["predictions"] = ref.predictions
    blocks["labels"] = ref.labels
    payload = columnar.encode(blocks, ref.rows)
    t = feature_references
    conn.execute(t.delete().where(t.c.model == model))
    conn.execute(t.insert().values(
        model=model, source=ref.source, source_rows=ref.source_rows, rows=ref.rows,
        features=len(ref.columns), payload=payload, created_at=ref.created_at,
    ))


def load_reference(conn: sa.Connection, model: str) -> FeatureReference | None:
    """The model's stored reference, or None if none was set."""
    t = feature_references
    row = conn.execute(
        sa.select(t.c.source, t.c.source_rows, t.c.payload, t.c.created_at).where(t.c.model == model)
    ).first()
    if row is None:
        return None
    _, blocks = columnar.decode(bytes(row.payload))
    return FeatureReference(
        model=model,
        columns={k[len(_FEATURE):]: v for k, v in blocks.items() if k.startswith(_FEATURE) and v is not None},
        predictions=blocks.get("predictions"),
        labels=blocks.get("labels"),
        source=row.source,
        source_rows=int(row.source_rows),
        created_at=float(row.created_at),
    )


def delete_reference(conn: sa.Connection, model: str) -> bool:
    """Remove the model's reference; whether there was one."""
    t = feature_references
    return conn.execute(t.delete().where(t.c.model == model)).rowcount > 0


def new_reference(
    model: str,
    columns: Mapping[str, list[Any]],
    source: str,
    source_rows: int,
    predictions: list[str | None] | None = None,
    labels: list[str | None] | None = None,
) -> FeatureReference:
    """A reference created now (a convenience for the commands and tests)."""
    return FeatureReference(model, dict(columns), predictions, labels, source, source_rows, time.time())


# -- window samples --------------------------------------------------------------------


def _window(model: str, start: float, end: float, version: str | None) -> list[sa.ColumnElement[bool]]:
    p = predictions
    where = [p.c.model == model, p.c.ts >= start, p.c.ts < end]
    if version is not None:
        where.append(p.c.model_version == version)
    return where


def with_features() -> sa.ColumnElement[bool]:
    """The partial index's predicate; a query must say it to use the index."""
    return predictions.c.features.isnot(None)


def sample_keys(model: str, start: float, end: float, limit: int, version: str | None = None) -> sa.Select:
    """(ts, digest) of the sample: a bounded top-N over the partial index's entries."""
    p = predictions
    return (
        sa.select(p.c.ts, p.c.digest)
        .where(*_window(model, start, end, version), with_features())
        .order_by(p.c.digest, p.c.ts)
        .limit(limit)
    )


def sample_query(model: str, start: float, end: float, limit: int, version: str | None = None) -> sa.Select:
    """The rows of the sample, smallest digest first: the keys from the partial index
    (`sample_keys`), then only those rows are read, labels joined."""
    p, f = predictions, feedback
    keys = sample_keys(model, start, end, limit, version).subquery("sample_keys")
    row = sa.and_(p.c.model == model, p.c.ts == keys.c.ts, p.c.digest == keys.c.digest, with_features())
    label = sa.and_(f.c.model == p.c.model, f.c.request_id == p.c.request_id)
    return (  # features as text, decoded by `_decode` (not per-row by the driver or SQLAlchemy)
        sa.select(p.c.request_id, p.c.prediction, sa.cast(p.c.features, sa.Text).label("features"),
                  f.c.label)
        .select_from(keys.join(p, row).outerjoin(f, label))
        .order_by(keys.c.digest, keys.c.ts)
    )


def _count(conn: sa.Connection, where: list[sa.ColumnElement[bool]]) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(predictions).where(*where)).scalar_one())


def _columns(rows: list[dict[str, Any]], max_columns: int | None) -> tuple[dict[str, list[Any]], int]:
    """Dense columns of the feature names seen (by name); over `max_columns`, the most
    frequent ones (ties by name) and how many were left out."""
    counts: Counter[str] = Counter()
    for keys, n in Counter(tuple(r) for r in rows).items():  # rows mostly share one key set
        for k in keys:
            counts[k] += n
    names = sorted(counts)
    left_out = 0
    if max_columns is not None and len(names) > max_columns:
        kept = set(sorted(names, key=lambda k: (-counts[k], k))[:max_columns])
        left_out = len(names) - len(kept)
        names = [k for k in names if k in kept]
    if not rows or not names:
        return {k: [] for k in names}, left_out
    values = zip(*(tuple(map(r.get, names)) for r in rows), strict=True)
    return {k: list(v) for k, v in zip(names, values, strict=True)}, left_out


def sample_window(
    conn: sa.Connection,
    model: str,
    start: float,
    end: float,
    limit: int,
    version: str | None = None,
    *,
    max_columns: int | None = None,
) -> WindowSample:
    """The deterministic sample of [start, end): at most `limit` predictions carrying
    features, the smallest digests first (see the module docstring for why that is an
    unbiased sample), with the window's counts. `version` None = all versions.

    `max_columns` bounds the feature names kept (the most frequent in the sample);
    rows whose features are not a JSON object count as rows without any feature.
    `total` counts through the (model, ts) index; with a `version` it reads each
    row of the window's index range (no index holds the version without features)."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    request_ids: list[str] = []
    preds: list[str] = []
    labels: list[str | None] = []
    feats: list[dict[str, Any]] = []
    if limit:
        for r in conn.execute(sample_query(model, start, end, limit, version)):
            request_ids.append(r.request_id)
            preds.append(r.prediction)
            labels.append(r.label)
            value = _decode(r.features)
            feats.append(value if isinstance(value, dict) else {})
    columns, left_out = _columns(feats, max_columns)
    where = _window(model, start, end, version)
    # A sample short of `limit` holds every row with features: that is the count.
    carrying = len(request_ids) if len(request_ids) < limit else _count(conn, [*where, with_features()])
    return WindowSample(
        columns=columns,
        request_ids=request_ids,
        predictions=preds,
        labels=labels,
        with_features=carrying,
        total=_count(conn, where),
        columns_left_out=left_out,
    )
