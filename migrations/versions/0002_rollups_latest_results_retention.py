"""rollups, latest results, retention

Adds the write-time rollup tables and the slice values they admit, the
`monitor_latest` table (each job's latest pass; `monitor_results` becomes the
history, with `monitor_runs.last_history` saying when it was last appended
to), the retention marks, and the `received_at` index retention deletes
`ingest_conflicts` by. Spelled out here rather than imported from
`modelmon.store.tables`, so later changes to the tables cannot rewrite history.

Existing predictions are counted into the new rollups by
`modelmon.store.migrate.upgrade` after this revision runs (a chunked rebuild,
outside this migration's transaction).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 21:51:34.696254
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
Epoch = sa.Float(precision=53)
Count = sa.BigInteger

# (table, key columns after model/res/bucket/model_version, value columns)
ROLLUPS = (
    ('rollup_requests', [], [
        ('n', Count()), ('errors', Count()), ('ok_latency', Count()), ('n_max', Count()),
        ('sum_max', Epoch), ('low', Count()), ('n_ent', Count()), ('sum_ent', Epoch),
        ('n_conf', Count()), ('sum_conf', Epoch), ('last_ts', Epoch),
    ]),
    ('rollup_classes', [('prediction', sa.String(256)), ('label', sa.String(256))], [
        ('n', Count()),
    ]),
    ('rollup_calibration', [('bin', sa.SmallInteger())], [
        ('n', Count()), ('sum_conf', Epoch), ('correct', Count()),
    ]),
    ('rollup_slices', [('attribute', sa.String(64)), ('value', sa.String(128))], [
        ('n', Count()), ('selected', Count()), ('labelled', Count()), ('correct', Count()),
        ('positives', Count()), ('tp', Count()), ('negatives', Count()), ('fp', Count()),
    ]),
    ('rollup_latency_good', [('threshold', sa.Float(precision=53))], [
        ('good', Count()),
    ]),
    ('rollup_sketches', [('kind', sa.String(16)), ('key', sa.Integer())], [
        ('n', Count()),
    ]),
)


def upgrade() -> None:
    for name, keys, values in ROLLUPS:
        key_names = ['model', 'res', 'bucket', 'model_version', *(k for k, _ in keys)]
        op.create_table(
            name,
            sa.Column('model', sa.String(length=64), nullable=False),
            sa.Column('res', sa.Integer(), nullable=False),
            sa.Column('bucket', sa.BigInteger(), nullable=False),
            sa.Column('model_version', sa.String(length=128), nullable=False),
            *(sa.Column(k, t, nullable=False) for k, t in keys),
            *(sa.Column(v, t, nullable=False) for v, t in values),
            sa.PrimaryKeyConstraint(*key_names, name=op.f(f'pk_{name}')),
        )

    op.create_table(
        'slice_values',
        sa.Column('model', sa.String(length=64), nullable=False),
        sa.Column('attribute', sa.String(length=64), nullable=False),
        sa.Column('value', sa.String(length=128), nullable=False),
        sa.Column('first_seen', Epoch, nullable=False),
        sa.PrimaryKeyConstraint('model', 'attribute', 'value', name=op.f('pk_slice_values')),
    )
    op.create_table(
        'retention_marks',
        sa.Column('table_name', sa.String(length=64), nullable=False),
        sa.Column('before', Epoch, nullable=False),
        sa.Column('updated_at', Epoch, nullable=False),
        sa.PrimaryKeyConstraint('table_name', name=op.f('pk_retention_marks')),
    )
    op.create_table(
        'monitor_latest',
        sa.Column('id', Id, autoincrement=True, nullable=False),
        sa.Column('model', sa.String(length=64), nullable=False),
        sa.Column('model_version', sa.String(length=128), nullable=False),
        sa.Column('monitor', sa.String(length=64), nullable=False),
        sa.Column('metric', sa.String(length=64), nullable=False),
        sa.Column('window', sa.String(length=16), nullable=False),
        sa.Column('slice', sa.String(length=512), nullable=False),
        sa.Column('labels', Json, nullable=True),
        sa.Column('window_start', Epoch, nullable=False),
        sa.Column('window_end', Epoch, nullable=False),
        sa.Column('value', sa.Float(precision=53), nullable=True),
        sa.Column('sample_count', sa.BigInteger(), nullable=False),
        sa.Column('status', sa.String(length=32), nullable=False),
        sa.Column('computed_at', Epoch, nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_monitor_latest')),
    )
    op.create_index(
        op.f('ix_monitor_latest_model_monitor'), 'monitor_latest', ['model', 'monitor'], unique=False
    )
    op.add_column('monitor_runs', sa.Column('last_history', Epoch, nullable=True))
    op.create_index(
        op.f('ix_ingest_conflicts_received_at'), 'ingest_conflicts', ['received_at'], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_ingest_conflicts_received_at'), table_name='ingest_conflicts')
    with op.batch_alter_table('monitor_runs', schema=None) as batch_op:  # SQLite: table copy
        batch_op.drop_column('last_history')
    op.drop_index(op.f('ix_monitor_latest_model_monitor'), table_name='monitor_latest')
    op.drop_table('monitor_latest')
    op.drop_table('retention_marks')
    op.drop_table('slice_values')
    for name, _, _ in reversed(ROLLUPS):
        op.drop_table(name)
