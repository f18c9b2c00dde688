"""The store's tables. Times are epoch seconds (UTC) in double precision.

Epoch seconds keep window arithmetic and delays (feedback minus prediction time)
plain SQL on both SQLite and PostgreSQL. `predictions.label` is a copy of the
first feedback label, kept so that monitors read one table; `feedback` stays
the record of what arrived (including feedback whose prediction has not).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.dialects.postgresql import JSONB

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER only
Json = JSON().with_variant(JSONB(), "postgresql")
Epoch = Float(precision=53)

# On PostgreSQL partitioned by RANGE (ts) (modelmon.store.partitions), so the
# key has to include ts; modelmon.store.writes keeps (model, request_id) unique.
predictions = Table(
    "predictions",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("request_id", String(256), primary_key=True),
    Column("ts", Epoch, primary_key=True),
    Column("model_version", String(128), nullable=False),
    Column("prediction", String(256), nullable=False),
    Column("scores", Json),
    Column("score_pred", Float(precision=53)),  # probability of the predicted class
    Column("score_max", Float(precision=53)),  # top-class probability
    Column("entropy", Float(precision=53)),  # nats, over the given scores
    Column("latency_seconds", Float(precision=53)),
    Column("status", String(16), nullable=False),
    Column("slices", Json),
    Column("features", Json),
    Column("schema_version", SmallInteger, nullable=False),
    Column("label", String(256)),
    Column("label_ts", Epoch),
    Column("topic", String(255)),
    Column("partition", Integer),
    Column("offset", BigInteger),
    Column("digest", String(32), nullable=False),
    Column("ingested_at", Epoch, nullable=False),
    Index(None, "model", "ts"),
    postgresql_partition_by="RANGE (ts)",
)

# The window samples of the feature families (modelmon.store.features): the keys of a
# window's predictions that carry features, in an index only they are in, so the sample
# (smallest digests) and the count with features are index-only scans on PostgreSQL
# (SQLite 3.40 still re-checks the predicate on each row). model_version is in it so that
# a per-version sample is one too. On PostgreSQL an index of the partitioned table: every
# partition, attached or created later, gets its own.
_WITH_FEATURES = predictions.c.features.isnot(None)
Index(
    "ix_predictions_with_features",
    predictions.c.model, predictions.c.ts, predictions.c.digest, predictions.c.model_version,
    sqlite_where=_WITH_FEATURES,
    postgresql_where=_WITH_FEATURES,
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("request_id", String(256), nullable=False),
    Column("label", String(256), nullable=False),
    Column("ts", Epoch, nullable=False),
    Column("source", String(16), nullable=False),  # kafka | http
    Column("topic", String(255)),
    Column("partition", Integer),
    Column("offset", BigInteger),
    Column("digest", String(32), nullable=False),
    Column("ingested_at", Epoch, nullable=False),
    UniqueConstraint("model", "request_id"),
    Index(None, "ingested_at"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source", String(16), nullable=False),  # kafka | http
    Column("topic", String(255)),
    Column("partition", Integer),
    Column("offset", BigInteger),
    Column("reason", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("payload", LargeBinary),  # truncated at ingest.dead_letter_payload_bytes
    Column("payload_bytes", Integer, nullable=False),  # size before truncation
    # The payload is cut short (so `modelmon deadletters replay` cannot replay it).
    Column("payload_truncated", Boolean, nullable=False, server_default=false()),
    Column("received_at", Epoch, nullable=False),
    # When `modelmon deadletters replay` stored it (or found it stored): a rerun skips it.
    Column("replayed_at", Epoch),
    UniqueConstraint("topic", "partition", "offset"),
    Index(None, "received_at"),
)

# Counts of duplicates whose content differed from what was stored first.
ingest_conflicts = Table(
    "ingest_conflicts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # prediction | feedback
    Column("model", String(64), nullable=False),
    Column("request_id", String(256), nullable=False),
    Column("topic", String(255)),
    Column("partition", Integer),
    Column("offset", BigInteger),
    Column("stored_digest", String(32), nullable=False),
    Column("new_digest", String(32), nullable=False),
    Column("received_at", Epoch, nullable=False),
    UniqueConstraint("kind", "topic", "partition", "offset"),
    Index(None, "received_at"),
)

baselines = Table(
    "baselines",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # predictions | labels
    Column("shares", Json, nullable=False),  # class -> share, summing to 1
    Column("sample_count", BigInteger),
    Column("source", Text, nullable=False),
    Column("created_at", Epoch, nullable=False),
    Index(None, "model", "kind", "created_at"),
)

# One reference of input features per model (modelmon.store.features), replaced when set
# again: a bounded sample of validation rows or of a frozen production window, stored as
# one compressed column-oriented payload (modelmon.store.columnar).
feature_references = Table(
    "feature_references",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("source", Text, nullable=False),
    Column("source_rows", BigInteger, nullable=False),  # rows in the source before sampling down
    Column("rows", Integer, nullable=False),  # rows stored
    Column("features", Integer, nullable=False),  # feature columns stored
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", Epoch, nullable=False),
)

def _result_columns() -> list[Column]:
    """The columns of a monitor result row (history and latest alike)."""
    return [
        Column("id", Id, primary_key=True, autoincrement=True),
        Column("model", String(64), nullable=False),
        Column("model_version", String(128), nullable=False),  # "*" = all versions
        Column("monitor", String(64), nullable=False),
        Column("metric", String(64), nullable=False),
        Column("window", String(16), nullable=False),
        Column("slice", String(512), nullable=False),  # canonical "k=v,k=v" ("" = whole window)
        Column("labels", Json),  # the same dimensions as a mapping, for exposition
        Column("window_start", Epoch, nullable=False),
        Column("window_end", Epoch, nullable=False),
        Column("value", Float(precision=53)),
        Column("sample_count", BigInteger, nullable=False),
        Column("status", String(32), nullable=False),  # ok | insufficient_data | maturing | no_baseline
        Column("computed_at", Epoch, nullable=False),
    ]


monitor_results = Table(
    "monitor_results",
    metadata,
    *_result_columns(),
    Index(None, "model", "monitor", "computed_at"),
    Index(None, "computed_at"),
)

monitor_runs = Table(
    "monitor_runs",
    metadata,
    Column("job", String(200), primary_key=True),  # e.g. "accuracy:fraud"
    Column("monitor", String(64), nullable=False),
    Column("model", String(64), nullable=False),
    Column("last_success", Epoch),
    Column("last_attempt", Epoch),
    Column("last_error", Text),
    Column("last_duration_seconds", Float(precision=53)),
    Column("last_history", Epoch),  # computed_at of the last pass appended to monitor_results
)

# The rows of each job's latest successful pass, replaced every tick (what
# /metrics, the API and the demo read); `monitor_results` keeps the history at
# `monitors.history_interval`.
monitor_latest = Table(
    "monitor_latest",
    metadata,
    *_result_columns(),
    Index(None, "model", "monitor"),
)

# -- rollups -------------------------------------------------------------------------
# Additive aggregates per (model, resolution, bucket start, model_version, ...),
# written in the transaction of the events they count (modelmon.store.rollups).
# `res` is the bucket length in seconds (rollups.fine or rollups.coarse) and
# `bucket` the bucket's start in epoch seconds; all counters cover status-ok
# predictions except rollup_requests.n / errors.


def _rollup(name: str, *columns: Column) -> Table:
    keys = [c for c in columns if c.primary_key]
    return Table(
        name,
        metadata,
        Column("model", String(64), primary_key=True),
        Column("res", Integer, primary_key=True),
        Column("bucket", BigInteger, primary_key=True),
        Column("model_version", String(128), primary_key=True),
        *keys,
        *[c for c in columns if not c.primary_key],
    )


Count = BigInteger
Sum = Float(precision=53)

rollup_requests = _rollup(
    "rollup_requests",
    Column("n", Count, nullable=False),  # every prediction, errors included
    Column("errors", Count, nullable=False),
    Column("ok_latency", Count, nullable=False),  # status ok with a latency
    Column("n_max", Count, nullable=False),
    Column("sum_max", Sum, nullable=False),
    Column("low", Count, nullable=False),  # score_max < confidence_threshold
    Column("n_ent", Count, nullable=False),
    Column("sum_ent", Sum, nullable=False),
    Column("n_conf", Count, nullable=False),  # with a per-row confidence (score_pred)
    Column("sum_conf", Sum, nullable=False),
    Column("last_ts", Epoch, nullable=False),  # latest prediction time in the bucket
)

rollup_classes = _rollup(
    "rollup_classes",
    Column("prediction", String(256), primary_key=True),
    Column("label", String(256), primary_key=True),  # "" = not labelled (yet)
    Column("n", Count, nullable=False),
)

rollup_calibration = _rollup(
    "rollup_calibration",
    Column("bin", SmallInteger, primary_key=True),
    Column("n", Count, nullable=False),  # labelled, with a confidence
    Column("sum_conf", Sum, nullable=False),
    Column("correct", Count, nullable=False),
)

rollup_slices = _rollup(
    "rollup_slices",
    Column("attribute", String(64), primary_key=True),
    Column("value", String(128), primary_key=True),  # __missing__ / __other__ reserved
    Column("n", Count, nullable=False),
    Column("selected", Count, nullable=False),
    Column("labelled", Count, nullable=False),
    Column("correct", Count, nullable=False),
    Column("positives", Count, nullable=False),
    Column("tp", Count, nullable=False),
    Column("negatives", Count, nullable=False),
    Column("fp", Count, nullable=False),
)

rollup_latency_good = _rollup(
    "rollup_latency_good",
    Column("threshold", Float(precision=53), primary_key=True),  # seconds
    Column("good", Count, nullable=False),  # status ok with latency <= threshold
)

rollup_sketches = _rollup(
    "rollup_sketches",
    Column("kind", String(16), primary_key=True),  # latency | delay
    Column("key", Integer, primary_key=True),  # DDSketch bin (modelmon.store.sketch)
    Column("n", Count, nullable=False),
)

ROLLUP_TABLES = (
    rollup_requests, rollup_classes, rollup_calibration, rollup_slices, rollup_latency_good,
    rollup_sketches,
)

# Slice values admitted per (model, attribute), up to rollups.slice_values_max.
slice_values = Table(
    "slice_values",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("attribute", String(64), primary_key=True),
    Column("value", String(128), primary_key=True),
    Column("first_seen", Epoch, nullable=False),
)

# What retention removed, per table: rows older than `before` are gone (a
# rebuild never starts before the raw rows' watermark).
retention_marks = Table(
    "retention_marks",
    metadata,
    Column("table_name", String(64), primary_key=True),
    Column("before", Epoch, nullable=False),
    Column("updated_at", Epoch, nullable=False),
)
