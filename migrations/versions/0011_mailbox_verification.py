"""mailbox restore points: verification

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 18:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("mailbox_restore_points", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "verification", sa.String(length=32), nullable=False, server_default="unverified"
            )
        )
        batch_op.add_column(sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mailbox_restore_points", schema=None) as batch_op:
        batch_op.drop_column("verified_at")
        batch_op.drop_column("verification")
