"""predictions keyed (model, request_id, ts), partitioned by time on PostgreSQL

Retention drops whole time partitions of `predictions` on PostgreSQL instead of
deleting rows, and a partitioned table's keys must include the partition key:
the surrogate `id` goes, the primary key becomes (model, request_id, ts)
(modelmon.store.writes keeps (model, request_id) unique by looking requests
up before inserting). The table is rebuilt: renamed aside, created anew (on
PostgreSQL PARTITION BY RANGE (ts), with a DEFAULT partition and weekly
partitions over the stored rows and two weeks ahead), filled, and the old one
dropped. `modelmon db upgrade` and every retention run then keep partitions
ahead of time (modelmon.store.partitions).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 22:30:00
"""
import math
import time

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
Epoch = sa.Float(precision=53)
WEEK = 7 * 86400.0
MAX_PARTITIONS = 260  # five years of weeks; rows beyond stay in DEFAULT

COLUMNS = (
    "model", "request_id", "ts", "model_version", "prediction", "scores", "score_pred", "score_max",
    "entropy", "latency_seconds", "status", "slices", "features", "schema_version", "label",
    "label_ts", "topic", "partition", "offset", "digest", "ingested_at",
)


def _columns() -> list[sa.Column]:
    return [
        sa.Column('model', sa.String(length=64), nullable=False),
        sa.Column('request_id', sa.String(length=256), nullable=False),
        sa.Column('ts', Epoch, nullable=False),
        sa.Column('model_version', sa.String(length=128), nullable=False),
        sa.Column('prediction', sa.String(length=256), nullable=False),
        sa.Column('scores', Json, nullable=True),
        sa.Column('score_pred', sa.Float(precision=53), nullable=True),
        sa.Column('score_max', sa.Float(precision=53), nullable=True),
        sa.Column('entropy', sa.Float(precision=53), nullable=True),
        sa.Column('latency_seconds', sa.Float(precision=53), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('slices', Json, nullable=True),
        sa.Column('features', Json, nullable=True),
        sa.Column('schema_version', sa.SmallInteger(), nullable=False),
        sa.Column('label', sa.String(length=256), nullable=True),
        sa.Column('label_ts', Epoch, nullable=True),
        sa.Column('topic', sa.String(length=255), nullable=True),
        sa.Column('partition', sa.Integer(), nullable=True),
        sa.Column('offset', sa.BigInteger(), nullable=True),
        sa.Column('digest', sa.String(length=32), nullable=False),
        sa.Column('ingested_at', Epoch, nullable=False),
    ]


def _copy(src: str, dst: str) -> None:
    q = op.get_bind().dialect.identifier_preparer.quote
    cols = ", ".join(q(c) for c in COLUMNS)
    op.execute(f"INSERT INTO {q(dst)} ({cols}) SELECT {cols} FROM {q(src)}")


def _partitions(bind: sa.Connection) -> None:
    """DEFAULT, then a partition per week from the oldest stored row to two weeks
    after the newest one (or after now)."""
    bind.exec_driver_sql("CREATE TABLE predictions_default PARTITION OF predictions DEFAULT")
    first, newest = bind.exec_driver_sql("SELECT min(ts), max(ts) FROM predictions_0002").one()
    now = time.time()
    start = math.floor(min(first if first is not None else now, now) / WEEK) * WEEK
    last = math.floor(max(newest if newest is not None else now, now) / WEEK) * WEEK + 2 * WEEK
    start = max(start, last - MAX_PARTITIONS * WEEK)
    while start <= last:
        name = "predictions_p" + time.strftime("%Y%m%d", time.gmtime(start))
        bind.exec_driver_sql(
            f'CREATE TABLE "{name}" PARTITION OF predictions FOR VALUES FROM ({start!r}) TO ({start + WEEK!r})'
        )
        start += WEEK


def upgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_predictions_model_ts'))
    op.rename_table('predictions', 'predictions_0002')
    if pg:  # constraint indexes are named per schema: free the names
        op.execute('ALTER TABLE predictions_0002 RENAME CONSTRAINT pk_predictions TO pk_predictions_0002')
        op.execute('ALTER TABLE predictions_0002 RENAME CONSTRAINT uq_predictions_model_request_id '
                   'TO uq_predictions_0002_model_request_id')
    op.create_table(
        'predictions',
        *_columns(),
        sa.PrimaryKeyConstraint('model', 'request_id', 'ts', name=op.f('pk_predictions')),
        **({"postgresql_partition_by": "RANGE (ts)"} if pg else {}),
    )
    if pg:
        _partitions(bind)
    _copy('predictions_0002', 'predictions')
    op.drop_table('predictions_0002')
    op.create_index(op.f('ix_predictions_model_ts'), 'predictions', ['model', 'ts'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_predictions_model_ts'), table_name='predictions')
    op.rename_table('predictions', 'predictions_0003')
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute('ALTER TABLE predictions_0003 RENAME CONSTRAINT pk_predictions TO pk_predictions_0003')
    op.create_table(
        'predictions',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        *_columns(),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_predictions')),
        sa.UniqueConstraint('model', 'request_id', name=op.f('uq_predictions_model_request_id')),
    )
    q = bind.dialect.identifier_preparer.quote
    cols = ", ".join(q(c) for c in COLUMNS)
    # A request stored twice with two timestamps keeps its first row.
    op.execute(
        f"INSERT INTO predictions ({cols}) SELECT {cols} FROM predictions_0003 AS p "
        "WHERE p.ingested_at = (SELECT min(o.ingested_at) FROM predictions_0003 AS o "
        "WHERE o.model = p.model AND o.request_id = p.request_id) ORDER BY p.ts"
    )
    op.drop_table('predictions_0003')  # on PostgreSQL, with its partitions
    op.create_index(op.f('ix_predictions_model_ts'), 'predictions', ['model', 'ts'], unique=False)
