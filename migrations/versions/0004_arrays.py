"""storage arrays: volumes and array snapshots

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 20:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "array_volumes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("naa_id", sa.String(length=64), nullable=False),
        sa.Column("consistency_group", sa.String(length=128), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("clone_of", sa.String(length=255), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_array_volumes_connection_id_connections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_array_volumes")),
        sa.UniqueConstraint("connection_id", "naa_id", name=op.f("uq_array_volumes_connection_id")),
    )
    with op.batch_alter_table("array_volumes") as batch:
        batch.create_index(
            batch.f("ix_array_volumes_connection_id"), ["connection_id"], unique=False
        )
        batch.create_index(batch.f("ix_array_volumes_naa_id"), ["naa_id"], unique=False)


def downgrade() -> None:
    op.drop_table("array_volumes")
