"""Alembic environment: migrates the database Bulwark is configured for."""

from alembic import context
from sqlalchemy import TypeDecorator, engine_from_config, pool

import app.db.models  # noqa: F401  (registers every table)
from app.config import get_settings
from app.db.base import Base
from app.db.models.mailboxes import is_migration_only

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.attributes.get("url") or get_settings().effective_database_url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = engine_from_config(
        {"sqlalchemy.url": _url()}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.connect() as conn:
        _run(conn)


def _render_item(type_, obj, autogen_context):
    # Our TypeDecorators are Python-side conveniences; migrations store their plain SQL type.
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return repr(obj.impl).replace("DateTime(", "sa.DateTime(").replace("String(", "sa.String(")
    return False


def _include_object(obj, name, type_, reflected, compare_to):
    # The archive's full-text index is made by migration 0005 per dialect, not by a model.
    return not (type_ in ("table", "index") and is_migration_only(name))


def _run(connection) -> None:
    # Batch mode lets ALTERs work on SQLite, which cannot alter most of a table in place.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        render_item=_render_item,
        include_object=_include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
