"""users: a session epoch per user, and ids that are never reused

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 18:15:00
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite only stops reusing the highest rowid with AUTOINCREMENT, which needs the table
    # rebuilt; PostgreSQL's sequence never hands an id out twice.
    with op.batch_alter_table(
        "users",
        recreate="always" if op.get_bind().dialect.name == "sqlite" else "auto",
        table_kwargs={"sqlite_autoincrement": True},
    ) as batch_op:
        batch_op.add_column(
            sa.Column("session_epoch", sa.String(length=64), nullable=False, server_default="")
        )
    users = sa.table("users", sa.column("id", sa.Integer), sa.column("session_epoch", sa.String))
    bind = op.get_bind()
    # Every existing session ends: its cookie carries no epoch.
    for (user_id,) in bind.execute(sa.select(users.c.id)).all():
        bind.execute(
            users.update()
            .where(users.c.id == user_id)
            .values(session_epoch=secrets.token_urlsafe(24))
        )
    # (a rebuild on SQLite again, so the AUTOINCREMENT is asked for again)
    with op.batch_alter_table("users", table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.alter_column("session_epoch", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("session_epoch")
