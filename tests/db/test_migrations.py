"""Migrations go up and down on both databases and agree with the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.db import migrate
from app.db.base import Base
from app.db.models.mailboxes import is_migration_only


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        names = set(inspect(engine).get_table_names()) - {"alembic_version"}
        return {n for n in names if not is_migration_only(n)}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_database_url):
    url = empty_database_url
    migrate.upgrade(url)
    assert _tables(url) == set(Base.metadata.tables)
    migrate.downgrade(url, "base")
    assert _tables(url) == set()
    migrate.upgrade(url)
    assert _tables(url) == set(Base.metadata.tables)


def test_models_and_migrations_agree(empty_database_url):
    migrate.upgrade(empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    # the full-text index has no model (see app.db.models.mailboxes)
                    "include_object": lambda o, name, t, r, c: not is_migration_only(name),
                },
            )
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
