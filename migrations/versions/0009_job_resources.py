"""jobs: the outside resources a job loads get a column of their own (were params.resources)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_jobs = sa.table(
    "jobs",
    sa.column("id", sa.Integer),
    sa.column("state", sa.String),
    sa.column("params", sa.JSON),
    sa.column("resources", sa.JSON),
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(
            sa.Column("resources", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
    bind = op.get_bind()
    # Jobs still to run keep their limits; finished ones keep their params as recorded.
    waiting = bind.execute(
        sa.select(_jobs.c.id, _jobs.c.params).where(_jobs.c.state.in_(("queued", "running")))
    ).all()
    for job_id, params in waiting:
        params = dict(params or {})
        resources = params.pop("resources", None) or []
        if isinstance(resources, str):
            resources = [resources]
        bind.execute(
            _jobs.update()
            .where(_jobs.c.id == job_id)
            .values(
                resources=sorted({r for r in resources if isinstance(r, str) and r}),
                params=params,
            )
        )
    # New rows get their value from the application, as required_capabilities does.
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.alter_column("resources", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("resources")
