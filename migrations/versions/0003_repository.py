"""repository: manifests and blocks catalog

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 20:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'repository_usage',
        sa.Column('connection_id', sa.Integer(), nullable=False),
        sa.Column('measured_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('images', sa.Integer(), nullable=False),
        sa.Column('chunks', sa.Integer(), nullable=False),
        sa.Column('stored_bytes', sa.BigInteger(), nullable=False),
        sa.Column('logical_bytes', sa.BigInteger(), nullable=False),
        sa.Column('last_gc_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('last_gc_removed_chunks', sa.Integer(), nullable=False),
        sa.Column('last_gc_freed_bytes', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ['connection_id'], ['connections.id'],
            name=op.f('fk_repository_usage_connection_id_connections'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('connection_id', name=op.f('pk_repository_usage')),
    )


def downgrade() -> None:
    op.drop_table('repository_usage')
