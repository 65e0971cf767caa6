"""in-guest agents: enrollment codes, agents, their tasks; log truncation and DAG settings

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 18:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _server_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["server_id"],
        ["exchange_servers.id"],
        name=op.f(f"fk_{table}_server_id_exchange_servers"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "agent_enrollments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        _server_fk("agent_enrollments"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_enrollments")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_agent_enrollments_code_hash")),
    )
    with op.batch_alter_table("agent_enrollments") as batch:
        batch.create_index(batch.f("ix_agent_enrollments_server_id"), ["server_id"], unique=False)
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("credential_hash", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("inventory", sa.JSON(), nullable=False),
        _server_fk("agents"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("credential_hash", name=op.f("uq_agents_credential_hash")),
        sa.UniqueConstraint("server_id", name=op.f("uq_agents_server_id")),
    )
    op.create_table(
        "agent_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("server_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(length=2000), nullable=True),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("bytes_sent", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        _server_fk("agent_tasks"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_agent_tasks_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_tasks")),
    )
    with op.batch_alter_table("agent_tasks") as batch:
        batch.create_index(batch.f("ix_agent_tasks_server_id"), ["server_id"], unique=False)
        batch.create_index(batch.f("ix_agent_tasks_job_id"), ["job_id"], unique=False)
        batch.create_index(batch.f("ix_agent_tasks_state"), ["state"], unique=False)
    with op.batch_alter_table("policies") as batch:
        batch.add_column(
            sa.Column("truncate_logs", sa.String(length=8), server_default="off", nullable=False)
        )
        batch.add_column(
            sa.Column(
                "dag_source", sa.String(length=16), server_default="passive_first", nullable=False
            )
        )
        batch.add_column(
            sa.Column("dag_preferred", sa.JSON(), server_default=sa.text("'[]'"), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("policies") as batch:
        batch.drop_column("dag_preferred")
        batch.drop_column("dag_source")
        batch.drop_column("truncate_logs")
    op.drop_table("agent_tasks")
    op.drop_table("agents")
    op.drop_table("agent_enrollments")
