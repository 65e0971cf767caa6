"""Bulwark's repository: the secondary medium that holds off-host copies (see store.py)."""

from app.repository.backend import FilesystemStore, ObjectMissing, ObjectStore
from app.repository.references import register_reference_source
from app.repository.store import (
    BLOCK_SIZE,
    ChunkDamaged,
    Manifest,
    ManifestInUse,
    Repository,
    RepositoryError,
    open_repository,
    open_repository_at,
)

__all__ = [
    "BLOCK_SIZE",
    "ChunkDamaged",
    "FilesystemStore",
    "Manifest",
    "ManifestInUse",
    "ObjectMissing",
    "ObjectStore",
    "Repository",
    "RepositoryError",
    "open_repository",
    "open_repository_at",
    "register_reference_source",
]
