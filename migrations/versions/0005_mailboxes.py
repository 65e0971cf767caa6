"""mailboxes: folders, messages and the archive

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 20:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The archive's full-text index is not a model (env.py leaves it out of comparisons): an FTS5
# virtual table on SQLite, a table with a generated tsvector and a GIN index on PostgreSQL.
SQLITE_FTS = (
    "CREATE VIRTUAL TABLE archive_fts USING fts5("
    "subject, people, body, attachments, tokenize = 'unicode61 remove_diacritics 2')"
)
# 'simple' words (names, codes, any language) with accents folded by unaccent, so "Angstrom"
# finds "Ångström" as FTS5's remove_diacritics does on SQLite.
POSTGRES_FTS = (
    "CREATE EXTENSION IF NOT EXISTS unaccent",
    "CREATE TEXT SEARCH CONFIGURATION bulwark_mail (COPY = simple)",
    "ALTER TEXT SEARCH CONFIGURATION bulwark_mail"
    " ALTER MAPPING FOR hword, hword_part, word WITH unaccent, simple",
    "CREATE TABLE archive_fts ("
    " message_id INTEGER PRIMARY KEY REFERENCES archive_messages (id) ON DELETE CASCADE,"
    " subject TEXT NOT NULL DEFAULT '', people TEXT NOT NULL DEFAULT '',"
    " body TEXT NOT NULL DEFAULT '', attachments TEXT NOT NULL DEFAULT '',"
    " document tsvector GENERATED ALWAYS AS ("
    "  setweight(to_tsvector('bulwark_mail', subject), 'A') ||"
    "  setweight(to_tsvector('bulwark_mail', people), 'B') ||"
    "  setweight(to_tsvector('bulwark_mail', attachments), 'C') ||"
    "  to_tsvector('bulwark_mail', body)) STORED)",
    # With GIN's pending list (fastupdate) inserts are fast; the indexer merges the list after
    # each pass (gin_clean_pending_list) so the planner costs the index right.
    "CREATE INDEX archive_fts_document ON archive_fts USING gin (document)",
)


def upgrade() -> None:
    op.create_table(
        "archive_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(length=512), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attachments", sa.JSON(), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["connections.id"],
            name=op.f("fk_archive_messages_repository_id_connections"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archive_messages")),
        sa.UniqueConstraint(
            "repository_id", "digest", name=op.f("uq_archive_messages_repository_id")
        ),
    )
    with op.batch_alter_table("archive_messages", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_archive_messages_indexed_at"), ["indexed_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_archive_messages_message_id"), ["message_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_archive_messages_sent_at"), ["sent_at"], unique=False)

    op.create_table(
        "mailboxes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=True),
        sa.Column("backup_seq", sa.Integer(), nullable=False),
        sa.Column("last_backup_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("compliance_retention_days", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name=op.f("fk_mailboxes_connection_id_connections"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
            name=op.f("fk_mailboxes_policy_id_policies"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailboxes")),
        sa.UniqueConstraint("connection_id", "name", name=op.f("uq_mailboxes_connection_id")),
    )
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mailboxes_connection_id"), ["connection_id"], unique=False
        )

    op.create_table(
        "mail_folders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("delimiter", sa.String(length=4), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("highest_uid", sa.BigInteger(), nullable=False),
        sa.Column("highestmodseq", sa.BigInteger(), nullable=True),
        sa.Column("uidnext", sa.BigInteger(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("gone_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_mail_folders_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_folders")),
        sa.UniqueConstraint("mailbox_id", "name", name=op.f("uq_mail_folders_mailbox_id")),
    )
    op.create_table(
        "mail_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("folder_id", sa.Integer(), nullable=False),
        sa.Column("archive_message_id", sa.Integer(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("internal_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_seq", sa.Integer(), nullable=False),
        sa.Column("to_seq", sa.Integer(), nullable=True),
        sa.Column("gone_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["folder_id"],
            ["mail_folders.id"],
            name=op.f("fk_mail_items_folder_id_mail_folders"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["archive_message_id"],
            ["archive_messages.id"],
            name=op.f("fk_mail_items_archive_message_id_archive_messages"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_items")),
    )
    with op.batch_alter_table("mail_items", schema=None) as batch_op:
        batch_op.create_index("ix_mail_items_folder_open", ["folder_id", "to_seq"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_mail_items_archive_message_id"), ["archive_message_id"], unique=False
        )

    op.create_table(
        "mailbox_restore_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("repository_id", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("new_messages", sa.Integer(), nullable=False),
        sa.Column("retain_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_mailbox_restore_points_job_id_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["mailbox_id"],
            ["mailboxes.id"],
            name=op.f("fk_mailbox_restore_points_mailbox_id_mailboxes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
            name=op.f("fk_mailbox_restore_points_policy_id_policies"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["repository_id"],
            ["connections.id"],
            name=op.f("fk_mailbox_restore_points_repository_id_connections"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailbox_restore_points")),
        sa.UniqueConstraint("mailbox_id", "seq", name=op.f("uq_mailbox_restore_points_mailbox_id")),
    )
    with op.batch_alter_table("mailbox_restore_points", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_mailbox_restore_points_captured_at"), ["captured_at"], unique=False
        )

    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_FTS:
            op.execute(statement)
    else:
        op.execute(SQLITE_FTS)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS archive_fts")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TEXT SEARCH CONFIGURATION IF EXISTS bulwark_mail")
    with op.batch_alter_table("mailbox_restore_points", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailbox_restore_points_captured_at"))

    op.drop_table("mailbox_restore_points")
    with op.batch_alter_table("mail_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mail_items_archive_message_id"))
        batch_op.drop_index("ix_mail_items_folder_open")

    op.drop_table("mail_items")
    op.drop_table("mail_folders")
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailboxes_connection_id"))

    op.drop_table("mailboxes")
    with op.batch_alter_table("archive_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_archive_messages_sent_at"))
        batch_op.drop_index(batch_op.f("ix_archive_messages_message_id"))
        batch_op.drop_index(batch_op.f("ix_archive_messages_indexed_at"))

    op.drop_table("archive_messages")
