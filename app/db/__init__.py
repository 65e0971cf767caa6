"""Persistence: SQLAlchemy models, sessions and migrations."""
