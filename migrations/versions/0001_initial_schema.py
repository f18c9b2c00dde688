"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 09:05:28.874431
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('baselines',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('shares', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('sample_count', sa.BigInteger(), nullable=True),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('created_at', sa.Float(precision=53), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_baselines'))
    )
    with op.batch_alter_table('baselines', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_baselines_model_kind_created_at'), ['model', 'kind', 'created_at'], unique=False)

    op.create_table('dead_letters',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('topic', sa.String(length=255), nullable=True),
    sa.Column('partition', sa.Integer(), nullable=True),
    sa.Column('offset', sa.BigInteger(), nullable=True),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=True),
    sa.Column('payload_bytes', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.Float(precision=53), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters')),
    sa.UniqueConstraint('topic', 'partition', 'offset', name=op.f('uq_dead_letters_topic_partition_offset'))
    )
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dead_letters_received_at'), ['received_at'], unique=False)

    op.create_table('feedback',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=256), nullable=False),
    sa.Column('label', sa.String(length=256), nullable=False),
    sa.Column('ts', sa.Float(precision=53), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('topic', sa.String(length=255), nullable=True),
    sa.Column('partition', sa.Integer(), nullable=True),
    sa.Column('offset', sa.BigInteger(), nullable=True),
    sa.Column('digest', sa.String(length=32), nullable=False),
    sa.Column('ingested_at', sa.Float(precision=53), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_feedback')),
    sa.UniqueConstraint('model', 'request_id', name=op.f('uq_feedback_model_request_id'))
    )
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feedback_ingested_at'), ['ingested_at'], unique=False)

    op.create_table('ingest_conflicts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=256), nullable=False),
    sa.Column('topic', sa.String(length=255), nullable=True),
    sa.Column('partition', sa.Integer(), nullable=True),
    sa.Column('offset', sa.BigInteger(), nullable=True),
    sa.Column('stored_digest', sa.String(length=32), nullable=False),
    sa.Column('new_digest', sa.String(length=32), nullable=False),
    sa.Column('received_at', sa.Float(precision=53), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_conflicts')),
    sa.UniqueConstraint('kind', 'topic', 'partition', 'offset', name=op.f('uq_ingest_conflicts_kind_topic_partition_offset'))
    )
    op.create_table('monitor_results',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('model_version', sa.String(length=128), nullable=False),
    sa.Column('monitor', sa.String(length=64), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('window', sa.String(length=16), nullable=False),
    sa.Column('slice', sa.String(length=512), nullable=False),
    sa.Column('labels', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('window_start', sa.Float(precision=53), nullable=False),
    sa.Column('window_end', sa.Float(precision=53), nullable=False),
    sa.Column('value', sa.Float(precision=53), nullable=True),
    sa.Column('sample_count', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('computed_at', sa.Float(precision=53), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_monitor_results'))
    )
    with op.batch_alter_table('monitor_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_monitor_results_computed_at'), ['computed_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_monitor_results_model_monitor_computed_at'), ['model', 'monitor', 'computed_at'], unique=False)

    op.create_table('monitor_runs',
    sa.Column('job', sa.String(length=200), nullable=False),
    sa.Column('monitor', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('last_success', sa.Float(precision=53), nullable=True),
    sa.Column('last_attempt', sa.Float(precision=53), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_duration_seconds', sa.Float(precision=53), nullable=True),
    sa.PrimaryKeyConstraint('job', name=op.f('pk_monitor_runs'))
    )
    op.create_table('predictions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('model', sa.String(length=64), nullable=False),
    sa.Column('model_version', sa.String(length=128), nullable=False),
    sa.Column('request_id', sa.String(length=256), nullable=False),
    sa.Column('ts', sa.Float(precision=53), nullable=False),
    sa.Column('prediction', sa.String(length=256), nullable=False),
    sa.Column('scores', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('score_pred', sa.Float(precision=53), nullable=True),
    sa.Column('score_max', sa.Float(precision=53), nullable=True),
    sa.Column('entropy', sa.Float(precision=53), nullable=True),
    sa.Column('latency_seconds', sa.Float(precision=53), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('slices', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('features', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('schema_version', sa.SmallInteger(), nullable=False),
    sa.Column('label', sa.String(length=256), nullable=True),
    sa.Column('label_ts', sa.Float(precision=53), nullable=True),
    sa.Column('topic', sa.String(length=255), nullable=True),
    sa.Column('partition', sa.Integer(), nullable=True),
    sa.Column('offset', sa.BigInteger(), nullable=True),
    sa.Column('digest', sa.String(length=32), nullable=False),
    sa.Column('ingested_at', sa.Float(precision=53), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_predictions')),
    sa.UniqueConstraint('model', 'request_id', name=op.f('uq_predictions_model_request_id'))
    )
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_predictions_model_ts'), ['model', 'ts'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_predictions_model_ts'))

    op.drop_table('predictions')
    op.drop_table('monitor_runs')
    with op.batch_alter_table('monitor_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_monitor_results_model_monitor_computed_at'))
        batch_op.drop_index(batch_op.f('ix_monitor_results_computed_at'))

    op.drop_table('monitor_results')
    op.drop_table('ingest_conflicts')
    with op.batch_alter_table('feedback', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_feedback_ingested_at'))

    op.drop_table('feedback')
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dead_letters_received_at'))

    op.drop_table('dead_letters')
    with op.batch_alter_table('baselines', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_baselines_model_kind_created_at'))

    op.drop_table('baselines')
