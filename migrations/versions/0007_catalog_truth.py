"""catalog truth: copies found gone, repository free space

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 18:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('restore_point_copies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gone_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('gone_reason', sa.Text(), nullable=True))
    with op.batch_alter_table('repository_usage', schema=None) as batch_op:
        batch_op.add_column(sa.Column('capacity_bytes', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('free_bytes', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('repository_usage', schema=None) as batch_op:
        batch_op.drop_column('free_bytes')
        batch_op.drop_column('capacity_bytes')
    with op.batch_alter_table('restore_point_copies', schema=None) as batch_op:
        batch_op.drop_column('gone_reason')
        batch_op.drop_column('gone_at')
