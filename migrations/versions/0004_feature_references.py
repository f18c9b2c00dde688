"""feature references, and an index of the predictions that carry features

Adds `feature_references` (one stored reference of input features per model,
a compressed column-oriented payload: modelmon.store.columnar) and the partial
index `ix_predictions_with_features` on predictions (model, ts, digest,
model_version) WHERE features IS NOT NULL, from which a window's deterministic
sample (smallest digests) and its count of predictions with features are read
(modelmon.store.features). On PostgreSQL the index is created on the
partitioned table, which creates it on every partition; partitions created or
attached later get theirs from it. Building it reads the stored predictions
once (a long `CREATE INDEX` on a large store; PostgreSQL cannot build an index
of a partitioned table CONCURRENTLY).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 04:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

WHERE = sa.text('features IS NOT NULL')


def upgrade() -> None:
    op.create_table(
        'feature_references',
        sa.Column('model', sa.String(length=64), nullable=False),
        sa.Column('source', sa.Text(), nullable=False),
        sa.Column('source_rows', sa.BigInteger(), nullable=False),
        sa.Column('rows', sa.Integer(), nullable=False),
        sa.Column('features', sa.Integer(), nullable=False),
        sa.Column('payload', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint('model', name=op.f('pk_feature_references')),
    )
    op.create_index(
        'ix_predictions_with_features', 'predictions', ['model', 'ts', 'digest', 'model_version'],
        unique=False, sqlite_where=WHERE, postgresql_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index('ix_predictions_with_features', table_name='predictions')
    op.drop_table('feature_references')
