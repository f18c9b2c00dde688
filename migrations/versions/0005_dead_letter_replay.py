"""dead letters: whether the payload was truncated, and when it was replayed

`dead_letters.payload_truncated` says that the stored payload is cut short at
`ingest.dead_letter_payload_bytes` (such a dead letter cannot be replayed);
existing rows get it from their sizes. `dead_letters.replayed_at` is set by
`modelmon deadletters replay` once a dead letter's event is stored (or found
stored), so a rerun skips it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 04:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payload_truncated', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('replayed_at', sa.Float(precision=53), nullable=True))
    op.execute(
        "UPDATE dead_letters SET payload_truncated = (COALESCE(length(payload), 0) < payload_bytes)"
    )


def downgrade() -> None:
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_column('replayed_at')
        batch_op.drop_column('payload_truncated')
