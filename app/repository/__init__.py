"""Bulwark's repository: the secondary medium that holds off-host copies (see store.py).

One module per concept: manifest.py (the image format), chunks.py (the chunk store),
image_writer.py and image_reader.py (images in and out, verify), writers.py (writer records
and the gc lock), gc.py, packs.py, backend.py (object stores), codec.py (sealing), and
connection.py (opening the repository a database connection row names).
"""

from app.repository.backend import FilesystemStore, ObjectMissing, ObjectStore
from app.repository.connection import open_repository
from app.repository.errors import ChunkDamaged, ManifestInUse, RepositoryError
from app.repository.manifest import BLOCK_SIZE, Manifest
from app.repository.references import register_reference_source
from app.repository.store import Repository, open_repository_at

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
